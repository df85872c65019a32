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

}  // namespace
}  // namespace cohort::training
