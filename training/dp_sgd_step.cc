#include "training/dp_sgd_step.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"

namespace cohort::training {

absl::StatusOr<uint64_t> OsRandom64() {
  uint64_t value = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(&value);
  size_t got = 0;
  while (got < sizeof(value)) {
    const ssize_t n = ::getrandom(bytes + got, sizeof(value) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(absl::StrCat("getrandom failed: ", std::strerror(errno)));
    got += static_cast<size_t>(n);
  }
  return value;
}

absl::StatusOr<SecureGenerator> SecureGenerator::Create() {
  absl::StatusOr<uint64_t> seed = OsRandom64();
  if (!seed.ok()) return seed.status();
  return SecureGenerator(at::make_generator<at::CPUGeneratorImpl>(*seed));
}

absl::Status SecureGenerator::Reseed() {
  absl::StatusOr<uint64_t> seed = OsRandom64();
  if (!seed.ok()) return seed.status();
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_current_seed(*seed);
  return absl::OkStatus();
}

torch::Tensor PoissonSample(int64_t n, double q, at::Generator& generator) {
  if (q >= 1.0) return torch::arange(n, torch::kInt64);
  const torch::Tensor included = torch::empty({n}, torch::kFloat32).bernoulli_(q, generator);
  return included.nonzero().reshape({-1});
}

torch::Tensor ClipFactors(const torch::Tensor& norms, double clip_norm) {
  return (clip_norm / (norms + 1e-6)).clamp_max(1.0);
}

std::vector<torch::Tensor> ClippedGradientSum(PerExampleGradients& engine, const std::vector<torch::Tensor>& parameters,
                                              const torch::Tensor& x, const torch::Tensor& y, double clip_norm,
                                              DpStepStats* stats) {
  std::vector<torch::Tensor> sums;
  DpStepStats s;
  s.batch_size = x.size(0);
  if (s.batch_size > 0) {
    s.loss_sum = engine.Backward(x, y).sum().item<double>();
    torch::NoGradGuard no_grad;
    const torch::Tensor norms = engine.SquaredNorms().sqrt();
    s.clipped = norms.gt(clip_norm).sum().item<int64_t>();
    sums = engine.WeightedSum(ClipFactors(norms, clip_norm));
    engine.Release();
  } else {
    for (const torch::Tensor& p : parameters) sums.push_back(torch::zeros_like(p));
  }
  if (stats != nullptr) *stats = s;
  return sums;
}

void AddGaussianNoise(std::vector<torch::Tensor>& sums, double stddev, at::Generator& noise) {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& sum : sums) {
    const torch::Tensor draw = torch::empty(sum.sizes(), torch::kFloat32).normal_(0.0, stddev, noise);
    sum.add_(draw.to(sum.device()));
  }
}

std::vector<torch::Tensor> PrivatizedGradient(PerExampleGradients& engine, const std::vector<torch::Tensor>& parameters,
                                              const torch::Tensor& x, const torch::Tensor& y, const DpSgdSpend& spend,
                                              at::Generator& noise, DpStepStats* stats) {
  std::vector<torch::Tensor> sums = ClippedGradientSum(engine, parameters, x, y, spend.clip_norm, stats);
  AddGaussianNoise(sums, spend.noise_multiplier * spend.clip_norm, noise);
  torch::NoGradGuard no_grad;
  for (torch::Tensor& sum : sums) sum.div_(spend.expected_batch_size);
  return sums;
}

}  // namespace cohort::training
