#include "core/config_reader.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/quote.h"

namespace cohort::core {

ConfigReader::ConfigReader(std::string path, const nlohmann::json& json) : path_(std::move(path)), json_(json) {
  if (!json_.is_object()) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat(path_.empty() ? "config" : path_, ": expected a JSON object, got ", JsonPrefix(json_)));
  }
}

void ConfigReader::Fail(const std::string& key, const std::string& expected) {
  if (!status_.ok()) return;
  status_ = absl::InvalidArgumentError(
      absl::StrCat(KeyPath(key), ": expected ", expected, ", got ", JsonPrefix(json_.at(key))));
}

static std::string RangeText(double min, double max, bool min_exclusive) {
  const bool has_max = max < 1e300;
  if (has_max) return absl::StrCat("a number in ", min_exclusive ? "(" : "[", min, ", ", max, "]");
  return absl::StrCat("a number ", min_exclusive ? "> " : ">= ", min);
}

void ConfigReader::Number(const std::string& key, double* out, double min, double max, bool min_exclusive) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  const nlohmann::json& v = json_.at(key);
  if (!v.is_number()) return Fail(key, RangeText(min, max, min_exclusive));
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < min || d > max || (min_exclusive && d == min)) {
    return Fail(key, RangeText(min, max, min_exclusive));
  }
  *out = d;
}

void ConfigReader::Integer(const std::string& key, int64_t* out, int64_t min, int64_t max) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  const nlohmann::json& v = json_.at(key);
  const std::string expected = max == INT64_MAX ? absl::StrCat("an integer >= ", min)
                                                : absl::StrCat("an integer in [", min, ", ", max, "]");
  if (!v.is_number_integer()) return Fail(key, expected);
  const int64_t i = v.get<int64_t>();
  if (i < min || i > max) return Fail(key, expected);
  *out = i;
}

void ConfigReader::Unsigned(const std::string& key, uint64_t* out) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  const nlohmann::json& v = json_.at(key);
  if (!v.is_number_unsigned()) return Fail(key, "an integer >= 0");
  *out = v.get<uint64_t>();
}

void ConfigReader::Bool(const std::string& key, bool* out) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  if (!json_.at(key).is_boolean()) return Fail(key, "true or false");
  *out = json_.at(key).get<bool>();
}

void ConfigReader::String(const std::string& key, std::string* out, const std::vector<std::string>& allowed) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  const nlohmann::json& v = json_.at(key);
  const std::string expected =
      allowed.empty() ? "a string" : absl::StrCat("one of \"", absl::StrJoin(allowed, "\", \""), "\"");
  if (!v.is_string()) return Fail(key, expected);
  const std::string s = v.get<std::string>();
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
    return Fail(key, expected);
  }
  *out = s;
}

void ConfigReader::Object(const std::string& key, nlohmann::json* out) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  if (!json_.at(key).is_object()) return Fail(key, "a JSON object");
  *out = json_.at(key);
}

void ConfigReader::NameList(const std::string& key, std::vector<std::string>* out) {
  known_.insert(key);
  if (!json_.is_object() || !json_.contains(key)) return;
  const nlohmann::json& v = json_.at(key);
  const std::string expected = "a list of distinct names (1-128 characters, no spaces or slashes)";
  if (!v.is_array()) return Fail(key, expected);
  std::vector<std::string> names;
  for (const nlohmann::json& item : v) {
    if (!item.is_string()) return Fail(key, expected);
    const std::string name = item.get<std::string>();
    if (name.empty() || name.size() > 128 || name.find_first_of("/\\ \t\n") != std::string::npos ||
        std::find(names.begin(), names.end(), name) != names.end()) {
      return Fail(key, expected);
    }
    names.push_back(name);
  }
  *out = std::move(names);
}

absl::Status ConfigReader::Finish() const {
  if (!status_.ok()) return status_;
  for (const auto& [key, value] : json_.items()) {
    if (!known_.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          KeyPath(key), ": unknown key (known keys here: ", absl::StrJoin(known_, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace cohort::core
