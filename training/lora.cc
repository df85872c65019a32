#include "training/lora.h"

#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "storage/atomic_write.h"
#include "storage/sha256.h"
#include "training/state_dict_io.h"

namespace cohort::training {

absl::Status CheckLoraBaseLoaded(const ModelSpec& spec) {
  if (spec.uses_lora() && !spec.lora_base) {
    return absl::FailedPreconditionError(
        "model_config.lora: the base model is not loaded (training::LoadLoraBase reads it before training)");
  }
  return absl::OkStatus();
}

absl::Status LoadLoraBase(ModelSpec* spec, const std::string& path) {
  if (!spec->uses_lora()) return absl::InvalidArgumentError("LoadLoraBase: model_config has no \"lora\"");
  LoraSpec& lora = *spec->transformer->lora;
  const std::string file = path.empty() ? lora.base_model : path;
  // The path may come from the server (a site without --base-model): read only a regular
  // file no larger than a state_dict of this model can be, never a device or a huge file.
  const uint64_t tensor_bytes = spec->BaseManifest().total_bytes();
  const uint64_t largest = tensor_bytes + tensor_bytes / 8 + (uint64_t{1} << 20);  // + names and zip container
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return absl::NotFoundError(absl::StrCat("LoRA base model ", file,
                                            ": not a regular file (model_config.lora.base_model, or --base-model at a "
                                            "site: the path of this site's copy of the base model's state_dict)"));
  }
  if (const uint64_t size = std::filesystem::file_size(file, ec); ec || size > largest) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA base model ", file, ": ", size, " bytes, more than a state_dict of ",
                                                   tensor_bytes, " bytes of tensors can take; not this model's base"));
  }
  absl::StatusOr<std::string> contents = storage::ReadFile(file);
  if (!contents.ok()) {
    return absl::Status(contents.status().code(),
                        absl::StrCat("LoRA base model (model_config.lora.base_model, or --base-model at a site): ",
                                     contents.status().message()));
  }
  const std::string digest = storage::Sha256Hex(std::string_view(*contents));
  if (!lora.base_sha256.empty() && digest != lora.base_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "LoRA base model ", file, " has SHA-256 ", digest, ", but the job's model_config.lora.base_sha256 is ",
        lora.base_sha256, ": this is not the base model the job adapts; use a copy of the server's file (check it "
        "with sha256sum)"));
  }
  absl::StatusOr<core::ParameterSet> loaded = ParseStateDict(*contents, file);
  contents->clear();
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<core::ParameterSet> base =
      ArrangeStateDict(*loaded, spec->BaseManifest(), absl::StrCat("LoRA base model ", file),
                       "the base model must be this transformer without \"lora\" (its model.pt)");
  if (!base.ok()) return base.status();
  lora.base_sha256 = digest;
  lora.base_model = file;
  spec->config["lora"]["base_sha256"] = digest;
  spec->lora_base = std::make_shared<const core::ParameterSet>(std::move(*base));
  return absl::OkStatus();
}

absl::StatusOr<core::ParameterSet> MergeLora(const ModelSpec& spec, const core::ParameterSet& adapters) {
  if (!spec.uses_lora() || !spec.lora_base) {
    return absl::FailedPreconditionError("merging LoRA adapters needs a LoRA model_config with its base model loaded");
  }
  if (absl::Status s = adapters.manifest().CheckSameAs(spec.ParameterManifest()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA adapters: ", s.message()));
  }
  const LoraSpec& lora = *spec.transformer->lora;
  core::ParameterSet merged(spec.BaseManifest());
  std::memcpy(merged.bytes().data(), spec.lora_base->bytes().data(), merged.bytes().size());
  auto tensor = [](core::ParameterSet& set, size_t i) {
    const core::TensorSpec& t = set.manifest().tensors()[i];
    return torch::from_blob(set.tensor_bytes(i).data(), t.shape, torch::kFloat32);
  };
  core::ParameterSet& in = const_cast<core::ParameterSet&>(adapters);  // read only: from_blob needs a mutable pointer
  try {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < in.manifest().size(); ++i) {
      const std::string& name = in.manifest().tensors()[i].name;
      const int target = merged.Find(name);
      if (target >= 0) {  // a tensor trained in full (norms with train_norms, an encoder's classifier)
        tensor(merged, static_cast<size_t>(target)).copy_(tensor(in, i));
        continue;
      }
      if (!name.ends_with(".lora_A")) continue;  // lora_B is taken with its lora_A
      const std::string path = name.substr(0, name.size() - std::string(".lora_A").size());
      const int b = in.Find(path + ".lora_B"), w = merged.Find(path + ".weight");
      if (b < 0 || w < 0) return absl::InternalError(absl::StrCat("LoRA adapter ", path, " has no lora_B or weight"));
      tensor(merged, static_cast<size_t>(w))
          .add_(torch::matmul(tensor(in, static_cast<size_t>(b)), tensor(in, i)), lora.scaling());
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("merging LoRA adapters failed: ", e.what_without_backtrace()));
  }
  return merged;
}

}  // namespace cohort::training
