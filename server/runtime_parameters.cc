#include "server/runtime_parameters.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/quote.h"
#include "core/quote.h"

namespace cohort::server {
namespace {

std::pair<std::string, std::string> Split(const std::string& key) {
  const size_t dot = key.find('.');
  if (dot == std::string::npos) return {"", key};
  return {key.substr(0, dot), key.substr(dot + 1)};
}

// The settable keys that apply to this job (privacy keys only under a mechanism that has them).
std::vector<std::string> ApplicableKeys(const nlohmann::json& config) {
  std::vector<std::string> keys;
  for (const core::SettableParameter& p : core::SettableParameters()) {
    const auto [section, name] = Split(std::string(p.key));
    if (config.contains(section) && config[section].is_object() && config[section].contains(name)) {
      keys.emplace_back(p.key);
    }
  }
  return keys;
}

}  // namespace

absl::StatusOr<std::string> ResolveSettableKey(const core::JobConfig& config, const std::string& parameter) {
  const nlohmann::json json = core::ToJson(config);
  const std::vector<std::string> settable = ApplicableKeys(json);
  auto [section, name] = Split(parameter);
  if (section.empty()) {
    // A bare key: the settable section that has it, else any section that has it (to say
    // it is fixed rather than unknown).
    for (const std::string& key : settable) {
      if (Split(key).second == name) return key;
    }
    for (const auto& [s, v] : json.items()) {
      if (v.is_object() && v.contains(name)) section = s;
    }
  }
  const bool exists = !section.empty() && json.contains(section) && json[section].is_object() &&
                      json[section].contains(name);
  if (!exists) {
    return absl::InvalidArgumentError(absl::StrCat("unknown parameter ", core::QuotePrefix(parameter),
                                                   "; parameters that can change while a job runs: ",
                                                   absl::StrJoin(settable, ", ")));
  }
  const std::string key = absl::StrCat(section, ".", name);
  if (core::FindSettableParameter(key) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        key, " is fixed for the life of a job; parameters that can change while it runs: ", absl::StrJoin(settable, ", ")));
  }
  return key;
}

nlohmann::json ParameterValueOf(const core::JobConfig& config, const std::string& key) {
  const auto [section, name] = Split(key);
  const nlohmann::json json = core::ToJson(config);
  if (!json.contains(section) || !json[section].is_object() || !json[section].contains(name)) return nullptr;
  return json[section][name];
}

absl::StatusOr<core::JobConfig> WithChanges(const core::JobConfig& config, std::span<const ParameterValue> changes) {
  if (changes.empty()) return config;
  nlohmann::json json = core::ToJson(config);
  for (const ParameterValue& change : changes) {
    const core::SettableParameter* settable = core::FindSettableParameter(change.parameter);
    if (settable == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(core::QuotePrefix(change.parameter), " cannot change while a job runs"));
    }
    const auto [section, name] = Split(change.parameter);
    json[section][name] = change.value;
  }
  absl::StatusOr<core::JobConfig> parsed = core::ParseJobConfig(json);
  if (!parsed.ok()) return absl::InvalidArgumentError(parsed.status().message());
  core::JobConfig result = config;
  for (const core::SettableParameter& p : core::SettableParameters()) p.copy(*parsed, result);
  return result;
}

}  // namespace cohort::server
