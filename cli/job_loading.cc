#include "cli/job_loading.h"

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"

namespace cohort::cli {

absl::StatusOr<LoadedJob> CheckJob(const nlohmann::json& json, const std::string& origin) {
  absl::StatusOr<core::JobConfig> config = core::ParseJobConfig(json);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", config.status().message()));
  absl::StatusOr<training::ModelSpec> model = training::ParseModelSpec(config->model_config);
  if (!model.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", model.status().message()));
  return LoadedJob{std::move(*config), std::move(*model)};
}

absl::StatusOr<LoadedJob> LoadJob(const std::string& path) {
  absl::StatusOr<nlohmann::json> json = core::ReadBoundedJsonFile(path, core::kJobConfigJson, "job config");
  if (!json.ok()) return json.status();
  return CheckJob(*json, path);
}

}  // namespace cohort::cli
