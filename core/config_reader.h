#pragma once
// Strict reading of one JSON object section: typed getters that check ranges, remember
// which keys were read, and report unknown keys. Messages name the full key path.

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace cohort::core {

class ConfigReader {
 public:
  // `path` is the section's key path ("training_config"); `json` must outlive the reader.
  ConfigReader(std::string path, const nlohmann::json& json);

  // Each getter leaves `*out` unchanged when the key is absent and records the first error.
  void Number(const std::string& key, double* out, double min, double max, bool min_exclusive = false);
  void Integer(const std::string& key, int64_t* out, int64_t min, int64_t max);
  void Unsigned(const std::string& key, uint64_t* out);
  void Bool(const std::string& key, bool* out);
  void String(const std::string& key, std::string* out, const std::vector<std::string>& allowed = {});
  void Object(const std::string& key, nlohmann::json* out);
  // A list of names: each 1-128 characters, without spaces or slashes, no duplicates.
  void NameList(const std::string& key, std::vector<std::string>* out);
  // Marks a key as known without reading it (a sub-section read by another reader).
  void Known(const std::string& key) { known_.insert(key); }

  // First error seen, else an error for the first unknown key, else OK.
  absl::Status Finish() const;
  std::string KeyPath(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

 private:
  void Fail(const std::string& key, const std::string& expected);

  std::string path_;
  const nlohmann::json& json_;
  std::set<std::string> known_;
  absl::Status status_;
};

}  // namespace cohort::core
