#include "cli/job_loading.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace cohort::cli {

absl::StatusOr<LoadedJob> CheckJob(const nlohmann::json& json, const std::string& origin) {
  absl::StatusOr<core::JobConfig> config = core::ParseJobConfig(json);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", config.status().message()));
  absl::StatusOr<training::ModelSpec> model = training::ParseModelSpec(config->model_config);
  if (!model.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", model.status().message()));
  return LoadedJob{std::move(*config), std::move(*model)};
}

absl::StatusOr<LoadedJob> LoadJob(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open job config ", path));
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return CheckJob(json, path);
}

}  // namespace cohort::cli
