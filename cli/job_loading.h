#pragma once
// Loading a job file the way every subcommand does: strict parse of the job config, then
// of its model_config, with messages that name the file and the key.

#include <string>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "training/model_spec.h"

namespace cohort::cli {

struct LoadedJob {
  core::JobConfig config;
  training::ModelSpec model;
};

absl::StatusOr<LoadedJob> LoadJob(const std::string& path);
// Same checks for a config already in memory (after command-line overrides).
absl::StatusOr<LoadedJob> CheckJob(const nlohmann::json& json, const std::string& origin);

}  // namespace cohort::cli
