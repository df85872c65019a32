#pragma once
// The base model of a LoRA job (model_config.lora, training/transformer_spec.h LoraSpec):
// reading and checking it where a model is built, and merging trained adapters into it for
// export. No LibTorch type crosses this header.

#include <string>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"
#include "training/model_spec.h"

namespace cohort::training {

// Reads the base model for `spec` (which must use LoRA) from `path`, or from
// model_config.lora.base_model when `path` is empty, and attaches it as spec->lora_base.
// The file's SHA-256 (of its bytes, as `sha256sum` prints it) must equal
// lora.base_sha256 when that is set (FailedPrecondition naming both digests and the fix
// otherwise); when it is not, it is set from the file, in the spec and in spec->config, so
// that a config passed on (the server's, sent to every site) names the file it was checked
// against. The file's tensors must be exactly the transformer's without adapters
// (BaseManifest: every name, shape and float32; extra or missing names are refused) and
// finite. Afterwards lora.base_model is the path actually read.
absl::Status LoadLoraBase(ModelSpec* spec, const std::string& path = "");

// A LoRA model trains and evaluates on its base model, which LoadLoraBase attaches:
// FailedPrecondition when `spec` uses LoRA and its base is not loaded.
absl::Status CheckLoraBaseLoaded(const ModelSpec& spec);

// The model with every adapter merged into its projection, W + (alpha / rank) * B A, laid
// out as spec.BaseManifest() (a transformer without "lora" loads it, and so does
// torch.nn.Module.load_state_dict of the Python twin); an encoder's trained classifier
// replaces the base's. `adapters` is laid out as spec.ParameterManifest(); the base must be
// loaded.
absl::StatusOr<core::ParameterSet> MergeLora(const ModelSpec& spec, const core::ParameterSet& adapters);

}  // namespace cohort::training
