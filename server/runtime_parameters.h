#pragma once
// Parameter changes made while a job runs, checked the same way wherever they come from:
// an admin's SetParameter, the round boundary that applies the queued ones, and the
// replay of OUT/job.db when a server restarts. Which keys are settable is declared once,
// in core/job_config.h (SettableParameters).

#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/job_config.h"

namespace cohort::server {

struct ParameterValue {
  std::string parameter;  // full key
  nlohmann::json value;
};

// The settable full key for `parameter` as an admin wrote it: a full key
// ("training_config.learning_rate") or a bare one ("learning_rate"). InvalidArgument for
// an unknown or fixed key, listing the keys that can change.
absl::StatusOr<std::string> ResolveSettableKey(const core::JobConfig& config, const std::string& parameter);

// The value of full key `key` in `config` (null when absent).
nlohmann::json ParameterValueOf(const core::JobConfig& config, const std::string& key);

// `config` with `changes` applied in order, validated as a whole (ParseJobConfig) and
// copied field by field through the settable table, so nothing fixed can move.
// InvalidArgument naming the key when the result is not a valid job.
absl::StatusOr<core::JobConfig> WithChanges(const core::JobConfig& config, std::span<const ParameterValue> changes);

}  // namespace cohort::server
