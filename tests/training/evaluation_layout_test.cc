// The server's test of each model (training::TestSetEvaluator) runs convolutions with the
// weights and the images channels-last, which this LibTorch runs faster; the metrics must be
// those of the plain layout on the same weights and images. This file includes LibTorch to
// evaluate the plain layout directly (training/train_step.h's EvaluateNet).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "training/data_readers.h"
#include "training/evaluation.h"
#include "training/model_spec.h"
#include "training/torch_model.h"
#include "training/train_step.h"
#include "training/trainer.h"

namespace cohort::training {
namespace {

const std::string kFashionMnistDir = COHORT_FASHION_MNIST_DIR;
const std::string kModelsDir = COHORT_MODELS_DIR;

TEST(EvaluationLayoutTest, TheChannelsLastTestGivesThePlainLayoutsMetrics) {
  std::ifstream in(kModelsDir + "/niid_cnn.json");
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(nlohmann::json::parse(in));
  ASSERT_TRUE(spec.ok()) << spec.status();
  absl::StatusOr<Dataset> test = ReadFashionMnist(kFashionMnistDir, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  Dataset images = test->Head(1000);
  absl::StatusOr<core::ParameterSet> weights = InitialParameters(*spec, 4);
  ASSERT_TRUE(weights.ok()) << weights.status();
  // Larger than at initialization, so that the logits are far from uniform and the accuracy
  // is not decided by near-ties.
  for (float& v : weights->floats()) v *= 3.0f;

  absl::StatusOr<core::EvalMetrics> fast = Evaluate(*spec, *weights, images, 100);
  ASSERT_TRUE(fast.ok()) << fast.status();
  CohortNet plain(*spec);
  ASSERT_TRUE(BindParameters(plain, spec->ParameterManifest(), *weights).ok());
  const core::EvalMetrics reference = EvaluateNet(plain, images, 100, /*channels_last=*/false);

  EXPECT_EQ(fast->samples, reference.samples);
  EXPECT_NEAR(fast->loss, reference.loss, 1e-5 * std::max(1.0, reference.loss));
  EXPECT_NEAR(fast->accuracy, reference.accuracy, 0.0011) << "at most one of 1000 predictions may differ (a tie)";
  EXPECT_GT(std::abs(reference.loss - std::log(10.0)), 0.05) << "a near-uniform guess would make this a weak check";
}

ModelSpec SpecOf(const std::string& json) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(nlohmann::json::parse(json));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

// InferenceForward (tiled max pools as strided maxima, ReLU after the pool, in place where
// the pass owns the tensor) must give forward's logits bit for bit, and leave its input as
// it was, on the layer orders where each shortcut applies or must not.
void ExpectInferenceForwardIsForward(const std::string& model_json, bool channels_last) {
  SCOPED_TRACE(model_json + (channels_last ? " channels-last" : " contiguous"));
  const ModelSpec spec = SpecOf(model_json);
  torch::manual_seed(7);
  CohortNet net(spec);
  net->eval();
  const std::vector<int64_t> shape = {37, spec.input_shape[0], spec.input_shape[1], spec.input_shape[2]};
  torch::Tensor input = torch::randn(shape);
  if (channels_last) input = input.contiguous(torch::MemoryFormat::ChannelsLast);
  const torch::Tensor kept = input.clone();
  c10::InferenceMode inference;
  const torch::Tensor reference = net->forward(input);
  const torch::Tensor fast = net->InferenceForward(input);
  EXPECT_TRUE(torch::equal(input, kept)) << "the caller's input was written";
  ASSERT_EQ(fast.sizes(), reference.sizes());
  EXPECT_TRUE(torch::equal(fast, reference)) << "largest difference "
                                              << (fast - reference).abs().max().item<float>();
}

constexpr char kCnn[] = R"({"input_shape": [1, 28, 28], "num_classes": 10, "layers": [
  {"type": "normalize", "mean": 0.286, "std": 0.353},
  {"type": "conv2d", "out_channels": 6, "kernel_size": 5}, {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2},
  {"type": "conv2d", "out_channels": 16, "kernel_size": 5}, {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2},
  {"type": "flatten"}, {"type": "linear", "out_features": 120}, {"type": "relu"},
  {"type": "linear", "out_features": 10}]})";

TEST(InferenceForwardTest, TheReadmeCnnGivesForwardsLogitsBitForBit) {
  ExpectInferenceForwardIsForward(kCnn, /*channels_last=*/false);
  ExpectInferenceForwardIsForward(kCnn, /*channels_last=*/true);
}

TEST(InferenceForwardTest, OddSizesDropThePartialWindowAsMaxPoolDoes) {
  // 27 -> conv 4 -> 24 ... and pools of 3 (tiled) and 2 over odd sizes.
  const std::string odd = R"({"input_shape": [2, 27, 29], "num_classes": 5, "layers": [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 2}, {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 3},
    {"type": "max_pool2d", "kernel_size": 2}, {"type": "relu"},
    {"type": "flatten"}, {"type": "linear", "out_features": 5}]})";
  ExpectInferenceForwardIsForward(odd, false);
  ExpectInferenceForwardIsForward(odd, true);
}

TEST(InferenceForwardTest, OverlappingPoolsTakeLibTorchsOwnPool) {
  const std::string overlapping = R"({"input_shape": [1, 12, 12], "num_classes": 3, "layers": [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "relu"},
    {"type": "max_pool2d", "kernel_size": 3, "stride": 2}, {"type": "flatten"}, {"type": "linear", "out_features": 3}]})";
  ExpectInferenceForwardIsForward(overlapping, false);
}

TEST(InferenceForwardTest, AReluOnTheInputOrAViewOfItLeavesTheInputAlone) {
  ExpectInferenceForwardIsForward(R"({"input_shape": [1, 8, 8], "num_classes": 3, "layers": [
    {"type": "relu"}, {"type": "max_pool2d", "kernel_size": 2}, {"type": "relu"},
    {"type": "flatten"}, {"type": "linear", "out_features": 3}]})", false);
  ExpectInferenceForwardIsForward(R"({"input_shape": [1, 8, 8], "num_classes": 3, "layers": [
    {"type": "flatten"}, {"type": "dropout", "p": 0.1}, {"type": "relu"}, {"type": "linear", "out_features": 3}]})", false);
  ExpectInferenceForwardIsForward(R"({"input_shape": [1, 8, 8], "num_classes": 3, "layers": [
    {"type": "max_pool2d", "kernel_size": 1}, {"type": "relu"}, {"type": "flatten"},
    {"type": "linear", "out_features": 3}]})", false);
}

TEST(InferenceForwardTest, NanPropagatesAsThroughForward) {
  const ModelSpec spec = SpecOf(kCnn);
  CohortNet net(spec);
  net->eval();
  torch::Tensor input = torch::randn({4, 1, 28, 28});
  input.index_put_({1, 0, 3, 3}, std::nanf(""));
  c10::InferenceMode inference;
  const torch::Tensor reference = net->forward(input), fast = net->InferenceForward(input);
  EXPECT_TRUE(torch::equal(fast.isnan(), reference.isnan()));
  EXPECT_TRUE(fast[1].isnan().any().item<bool>());
}

}  // namespace
}  // namespace cohort::training
