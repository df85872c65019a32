#pragma once
// Internal to the training layer (includes LibTorch): per-example gradient norms and weighted
// sums of per-example gradients for a sequential model, vectorized over the batch. This is
// what DP-SGD's clipping needs, without one backward pass per example and, for most layers,
// without ever holding a per-example gradient.
//
// How: the model runs layer by layer, keeping each trainable layer's input a_n; one autograd
// call over the summed per-example losses gives every trainable layer's output gradient g_n
// (whose row n is example n's alone). Each example's parameter gradient is a function of
// (a_n, g_n) alone:
//   linear     dW_n = g_n^T a_n: ||dW_n||^2 = ||a_n||^2 ||g_n||^2 on a flat input (never
//              formed); sum_n w_n dW_n = (w * g)^T a, one matmul
//   conv2d     dW_n is the correlation of a_n with g_n: one grouped convolution (a group per
//              example) forms all of them, [B, O x C x k x k], which is small next to the
//              activations (2,400 floats per example for niid_cnn's second conv); norms and
//              the weighted sum (one matrix-vector product) come from it
//   embedding  dW_n scatters g_n's rows to the looked-up indices: its norm from dW_n itself
//              (rows x dim) or from sum_{t,s} [i_t = i_s] g_t . g_s (positions^2), whichever
//              is smaller; the weighted sum is one index_add
//   layer_norm dgamma_n = sum over positions of g_n * xhat_n, dbeta_n = sum of g_n: formed
//              directly ([B, D] each)
// A layer with trainable parameters of any other kind is refused when the engine is built.

#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace cohort::training {

class PerExampleGradients {
 public:
  // `layers` are run in order (the model's nn::Sequential); `labels[i]` names layer i in
  // errors, e.g. "model_config.layers[3] (conv2d)". InvalidArgument naming the first layer
  // with trainable parameters whose per-example gradients cannot be computed here.
  static absl::StatusOr<PerExampleGradients> Create(torch::nn::Sequential layers, std::vector<std::string> labels);

  // Runs the model on x [B, ...] (B >= 1) and one backward pass from the sum of the
  // per-example cross-entropy losses against y [B] to every trainable layer's output. Keeps
  // what the norms and sums below need until the next call or Release(). Returns the
  // per-example losses [B], detached. Parameter .grad fields are not touched.
  torch::Tensor Backward(const torch::Tensor& x, const torch::Tensor& y);

  // Squared L2 norm of each example's gradient, one [B] tensor per parameter tensor, in the
  // model's named_parameters() order.
  std::vector<torch::Tensor> SquaredNormsPerParameter() const;
  // The whole gradient's squared norm per example [B]: the sum of the above.
  torch::Tensor SquaredNorms() const;
  // sum_n weights[n] * (example n's gradient), per parameter tensor in named_parameters()
  // order, each shaped like its parameter. weights: [B].
  std::vector<torch::Tensor> WeightedSum(const torch::Tensor& weights) const;

  int64_t batch_size() const { return batch_size_; }
  void Release();

  // Bound on the scratch (per-position products of linear and embedding layers) one chunk of
  // the batch may take: 4 MiB of floats, so that memory stays flat in the batch size.
  static constexpr int64_t kChunkFloats = int64_t{1} << 20;

 private:
  enum class Kind { kLinear, kConv2d, kEmbedding, kLayerNorm };
  struct Layer {
    size_t index;  // in the Sequential
    Kind kind;
    std::shared_ptr<torch::nn::Module> module;
  };
  struct Record {
    torch::Tensor input, grad_output;
    // conv2d and layer_norm: the per-example gradients themselves, [B, numel]; conv2d drops
    // its input and output gradient once these are formed.
    torch::Tensor per_example_weight, per_example_bias;
  };

  PerExampleGradients(torch::nn::Sequential layers, std::vector<Layer> trainable);
  void LayerNormPerExample(const Layer& layer, Record& record) const;
  void Conv2dPerExample(const Layer& layer, Record& record) const;

  torch::nn::Sequential layers_;
  std::vector<Layer> trainable_;
  std::vector<Record> records_;  // one per trainable layer, for the current batch
  int64_t batch_size_ = 0;
};

}  // namespace cohort::training
