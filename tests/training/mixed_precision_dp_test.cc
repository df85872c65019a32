// DP-SGD under bf16 autocast on the CPU: the forward pass runs in bf16, but per-example norms,
// clip factors and sums stay fp32, so every clipped per-example gradient has norm <= C.
// Includes LibTorch (the internal headers do).
#include <ATen/autocast_mode.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "training/data_readers.h"
#include "training/dp_sgd_step.h"
#include "training/model_spec.h"
#include "training/per_example_grads.h"
#include "training/torch_model.h"

namespace cohort::training {
namespace {

// CPU autocast to bf16 for one scope, as the trainer sets it for a step.
class CpuBf16Autocast {
 public:
  CpuBf16Autocast() {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
    at::autocast::increment_nesting();
  }
  ~CpuBf16Autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(false);
  }
};

TEST(MixedPrecisionDpSgdTest, Bf16PerExampleClippedNormsStayWithinTheClipNorm) {
  std::ifstream in(std::string(COHORT_MODELS_DIR) + "/niid_cnn.json");
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(nlohmann::json::parse(in));
  ASSERT_TRUE(spec.ok());
  absl::StatusOr<Dataset> data = ReadDataset("fashion-mnist", COHORT_FASHION_MNIST_DIR, Split::kTrain, "label");
  ASSERT_TRUE(data.ok());
  Dataset batch = data->Head(16);
  torch::manual_seed(5);
  CohortNet net(*spec);
  std::vector<int64_t> shape = {16};
  shape.insert(shape.end(), batch.example_shape.begin(), batch.example_shape.end());
  const torch::Tensor x = torch::from_blob(batch.features.data(), shape, torch::kFloat32);
  const torch::Tensor y = torch::from_blob(batch.labels.data(), {16}, torch::kInt64);
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), {});
  ASSERT_TRUE(engine.ok());

  engine->Backward(x, y);
  const torch::Tensor fp32_norms = engine->SquaredNorms().sqrt();
  torch::Tensor bf16_norms;
  {
    CpuBf16Autocast autocast;
    // Proof that autocast is on: a linear layer's output comes back in bf16.
    ASSERT_EQ(torch::nn::functional::linear(x.reshape({16, -1}), torch::ones({3, 784})).scalar_type(), at::kBFloat16);
    engine->Backward(x, y);
    bf16_norms = engine->SquaredNorms().sqrt();
  }
  ASSERT_EQ(bf16_norms.scalar_type(), torch::kFloat32);
  // bf16 keeps 8 bits of mantissa: the norms agree to a few percent.
  EXPECT_TRUE(torch::allclose(bf16_norms, fp32_norms, /*rtol=*/0.05, /*atol=*/1e-3))
      << bf16_norms << fp32_norms;

  const double clip = 0.5 * fp32_norms.median().item<double>();  // about half the examples clipped
  const torch::Tensor factors = ClipFactors(bf16_norms, clip);
  for (int64_t n = 0; n < 16; ++n) {
    torch::Tensor one_hot = torch::zeros({16});
    one_hot[n] = factors[n];
    double squared = 0;
    for (const torch::Tensor& g : engine->WeightedSum(one_hot)) {
      ASSERT_EQ(g.scalar_type(), torch::kFloat32);
      squared += g.pow(2).sum().item<double>();
    }
    EXPECT_LE(std::sqrt(squared), clip * (1 + 1e-5)) << "example " << n;
  }
}

}  // namespace
}  // namespace cohort::training
