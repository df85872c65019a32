#pragma once
// Internal to the training layer (includes LibTorch): the module built from a ModelSpec
// and the conversions between its parameters and core::ParameterSet.

#include <optional>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "core/job_config.h"
#include "core/parameter_set.h"
#include "training/model_spec.h"
#include "training/transformer.h"

namespace cohort::training {

// The "embedding" layer: nn.Embedding over a float input whose values are cast to int64
// indices (data sets hold floats). The weight is registered on this module itself, so its
// state_dict key is `layers.<i>.weight`, as in the Python twin. Initialized N(0, 1), as
// torch.nn.Embedding.
class FloatIndexEmbeddingImpl : public torch::nn::Module {
 public:
  FloatIndexEmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim);
  // Fails (c10::Error) naming the value when an index is outside [0, num_embeddings).
  torch::Tensor forward(torch::Tensor x);
  torch::Tensor Indices(const torch::Tensor& x) const;

  torch::Tensor weight;
};
TORCH_MODULE(FloatIndexEmbedding);

// Holds the layers as `layers` so that state_dict keys read `layers.<i>.weight`, the same
// as nn.Sequential named `layers` in the Python twin; or, for a transformer spec, the
// transformer's parts under their own names (training/transformer.h).
class CohortNetImpl : public torch::nn::Module {
 public:
  explicit CohortNetImpl(const ModelSpec& spec);
  torch::Tensor forward(torch::Tensor x) {
    return transformer_ ? transformer_->forward(x, is_training()) : layers_->forward(x);
  }
  // forward's result, computed for inference only (under c10::InferenceMode, in eval
  // mode) with fewer passes over memory: a max pool whose windows tile the input (kernel
  // equal to stride, no padding or dilation) is taken as elementwise maxima of strided
  // views, a ReLU before a max pool runs after it (the two commute: ReLU is monotone), and
  // a ReLU over a tensor this pass computed runs in place. The server's test of the
  // README's CNN spends 37% of its time in LibTorch's channels-last max pool otherwise.
  // Every result is bit-identical to forward's (maxima and ReLU only move and compare
  // values; NaN propagates through both alike).
  torch::Tensor InferenceForward(torch::Tensor x);
  // In model_config.layers order; DP-SGD runs them one by one to see each layer's input.
  // Empty for a transformer.
  torch::nn::Sequential& layers() { return layers_; }

 private:
  // LoRA: every tensor that ModelSpec::ParameterManifest leaves out stops requiring a
  // gradient, and every tensor but the adapters takes its value from spec.lora_base when
  // that is loaded.
  void FreezeBaseAndLoad(const ModelSpec& spec);

  torch::nn::Sequential layers_;
  std::optional<TransformerParts> transformer_;
};
TORCH_MODULE(CohortNet);

// The module's trained parameters (those that require a gradient), in state_dict order: all
// of them, or with LoRA the adapters (and an encoder's classifier); the base model's
// tensors are frozen. What optimizers, gradient sums and updates cover.
std::vector<torch::Tensor> TrainableParameters(CohortNet& net);

// Copies `parameters` (the trained parameters, ModelSpec::ParameterManifest) into the
// module; fails naming the first tensor that differs.
absl::Status LoadParameters(CohortNet& net, const core::ParameterSet& parameters);
// Makes the module's trained parameters views of `parameters`' own bytes (no copy), for
// inference only: nothing may write them, and `parameters` must outlive their use.
// `expected` is the layout the module was built for (ModelSpec::ParameterManifest), which
// `parameters` must have. UnbindParameters leaves them empty (no memory held) until the
// next bind.
absl::Status BindParameters(CohortNet& net, const core::Manifest& expected, const core::ParameterSet& parameters);
void UnbindParameters(CohortNet& net);
// Writes trained - global over `global` (the module's trained parameters, laid out like
// it), tensor by tensor: the update of a round without a second model-sized buffer.
void WriteDeltaOver(CohortNet& net, core::ParameterSet& global);
// The module's trained parameters as a set laid out like `manifest`.
core::ParameterSet ExtractParameters(CohortNet& net, const core::Manifest& manifest);

// The optimizer `config` names (sgd | adam | adamw, with its momentum, betas, eps and
// weight decay) over `parameters`, at config.learning_rate. Used by the split-learning
// parts; the learning-rate schedule is the caller's (it sets each group's lr every step).
std::unique_ptr<torch::optim::Optimizer> NewOptimizer(std::vector<torch::Tensor> parameters,
                                                      const core::TrainingConfig& config);

}  // namespace cohort::training
