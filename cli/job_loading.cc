#include "cli/job_loading.h"

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "training/lora.h"

namespace cohort::cli {

absl::StatusOr<LoadedJob> CheckJob(const nlohmann::json& json, const std::string& origin) {
  absl::StatusOr<core::JobConfig> config = core::ParseJobConfig(json);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", config.status().message()));
  absl::StatusOr<training::ModelSpec> model = training::ParseModelSpec(config->model_config);
  if (!model.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", model.status().message()));
  if (model->uses_lora()) {
    // Read and hashed here, so that the config the server sends every site names the digest
    // each site checks its own copy against (training/lora.h).
    if (absl::Status s = training::LoadLoraBase(&*model); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(origin, ": ", s.message()));
    }
    config->model_config = model->config;
  }
  if (model->transformer && config->privacy.mechanism == "dp_sgd") {
    // Refused here, before any site trains: DP-SGD's per-example gradients cover layer lists only.
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": privacy.mechanism: \"dp_sgd\" does not support transformer models yet; use \"client_dp\" "
        "or a model_config with \"layers\""));
  }
  if (config->job_type == "horizontal" && model->predicts_every_position() != (config->data.dataset == "text")) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": data.dataset: \"", config->data.dataset, "\" ",
        model->predicts_every_position() ? "holds one label per example, but a decoder transformer predicts the next "
                                           "token at every position; use \"text\""
                                         : "is next-token text, which only a decoder transformer (model_config "
                                           "without \"layers\", \"architecture\": \"decoder\") can learn"));
  }
  return LoadedJob{std::move(*config), std::move(*model)};
}

absl::StatusOr<LoadedJob> LoadJob(const std::string& path) {
  absl::StatusOr<nlohmann::json> json = core::ReadBoundedJsonFile(path, core::kJobConfigJson, "job config");
  if (!json.ok()) return json.status();
  return CheckJob(*json, path);
}

}  // namespace cohort::cli
