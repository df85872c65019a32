#pragma once
// Internal to the training layer (includes LibTorch): the pieces of one DP-SGD step, as
// described in training/dp_sgd.h: secure randomness, Poisson sampling, clipping and noise.

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "training/dp_sgd.h"
#include "training/per_example_grads.h"

namespace cohort::training {

// A LibTorch CPU generator for DP-SGD's batch sampling and noise, seeded from the OS's secure
// randomness (getrandom(2)), never from the job seed. LibTorch's generator is MT19937 and keeps
// only 32 bits of a seed, so Reseed() draws a fresh seed for every step: no one seed governs
// more than one step's batch and noise.
class SecureGenerator {
 public:
  // Internal error when the OS gives no randomness.
  static absl::StatusOr<SecureGenerator> Create();
  absl::Status Reseed();
  at::Generator& generator() { return generator_; }

 private:
  explicit SecureGenerator(at::Generator generator) : generator_(std::move(generator)) {}
  at::Generator generator_;
};

// 64 bits from getrandom(2).
absl::StatusOr<uint64_t> OsRandom64();

// The indices (int64, ascending) of a Poisson sample of `n` examples: each independently with
// probability q.
torch::Tensor PoissonSample(int64_t n, double q, at::Generator& generator);

struct DpStepStats {
  int64_t batch_size = 0;  // examples drawn
  int64_t clipped = 0;     // examples whose gradient norm exceeded the clip norm
  double loss_sum = 0.0;   // sum of the drawn examples' losses
};

// Clip factors min(1, C / ||g_n||) for per-example gradient norms `norms` [B]. The small
// constant keeps every clipped norm strictly below C, also when ||g_n|| is 0.
torch::Tensor ClipFactors(const torch::Tensor& norms, double clip_norm);

// sum_n clip(g_n) over the batch (x, y), which may be empty: one tensor per parameter in the
// model's named_parameters() order, on the parameters' device, in fp32 whatever precision
// the forward pass ran in. `parameters` gives their shapes.
std::vector<torch::Tensor> ClippedGradientSum(PerExampleGradients& engine, const std::vector<torch::Tensor>& parameters,
                                              const torch::Tensor& x, const torch::Tensor& y, double clip_norm,
                                              DpStepStats* stats);

// Adds N(0, stddev^2) to every coordinate of `sums`, drawn from `noise` (a CPU generator) and
// copied to the sums' device.
void AddGaussianNoise(std::vector<torch::Tensor>& sums, double stddev, at::Generator& noise);

// The privatized gradient of the batch (x, y), which may be empty (a Poisson batch can be):
// (sum_n clip(g_n) + N(0, (sigma C)^2)) / (q N), one tensor per parameter in the model's
// named_parameters() order. `parameters` gives their shapes.
std::vector<torch::Tensor> PrivatizedGradient(PerExampleGradients& engine, const std::vector<torch::Tensor>& parameters,
                                              const torch::Tensor& x, const torch::Tensor& y, const DpSgdSpend& spend,
                                              at::Generator& noise, DpStepStats* stats);

}  // namespace cohort::training
