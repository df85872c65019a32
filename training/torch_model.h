#pragma once
// Internal to the training layer (includes LibTorch): the module built from a ModelSpec
// and the conversions between its parameters and core::ParameterSet.

#include <torch/torch.h>

#include "absl/status/status.h"
#include "core/parameter_set.h"
#include "training/model_spec.h"

namespace cohort::training {

// Holds the layers as `layers` so that state_dict keys read `layers.<i>.weight`, the same
// as nn.Sequential named `layers` in the Python twin.
class CohortNetImpl : public torch::nn::Module {
 public:
  explicit CohortNetImpl(const ModelSpec& spec);
  torch::Tensor forward(torch::Tensor x) { return layers_->forward(x); }

 private:
  torch::nn::Sequential layers_;
};
TORCH_MODULE(CohortNet);

// Copies `parameters` into the module; fails naming the first tensor that differs.
absl::Status LoadParameters(CohortNet& net, const core::ParameterSet& parameters);
// The module's parameters as a set laid out like `manifest`.
core::ParameterSet ExtractParameters(CohortNet& net, const core::Manifest& manifest);

}  // namespace cohort::training
