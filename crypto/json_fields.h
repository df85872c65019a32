#pragma once
// Internal to crypto/: reading the small JSON files of provisioning (config.json,
// federation.json) with errors that name the file and the field.

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "storage/atomic_write.h"

namespace cohort::crypto::internal {

inline absl::StatusOr<nlohmann::json> ReadJsonObject(const std::filesystem::path& path) {
  absl::StatusOr<std::string> text = storage::ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<nlohmann::json> json = core::ParseBoundedJson(*text, core::kStartupKitJson, path.string());
  if (!json.ok()) return json.status();
  if (!json->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": expected a JSON object"));
  }
  return json;
}

inline absl::StatusOr<std::string> StringField(const nlohmann::json& json,
                                               const std::filesystem::path& path,
                                               const char* key) {
  auto it = json.find(key);
  if (it == json.end() || !it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": expected a string field \"", key, "\""));
  }
  return it->get<std::string>();
}

}  // namespace cohort::crypto::internal
