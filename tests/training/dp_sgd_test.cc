// DP-SGD through the training layer's narrow interface (dp_sgd.h, trainer.h) on the real
// Fashion-MNIST: the plan of a round's spend, and LocalTrainer::TrainRound under
// privacy.mechanism "dp_sgd". This file includes no LibTorch header.
#include "training/dp_sgd.h"

#include <cmath>
#include <fstream>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "privacy/rdp_accountant.h"
#include "training/data_readers.h"
#include "training/trainer.h"

namespace cohort::training {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kFashionMnistDir = COHORT_FASHION_MNIST_DIR;
const std::string kModelsDir = COHORT_MODELS_DIR;

core::PrivacyConfig DpSgd(double epsilon, double noise_multiplier = 0, double clip_norm = 1.0) {
  core::PrivacyConfig p;
  p.mechanism = "dp_sgd";
  p.target_epsilon = epsilon;
  p.target_delta = 1e-5;
  p.noise_multiplier = noise_multiplier;
  p.clip_norm = clip_norm;
  return p;
}

core::TrainingConfig Training(int64_t batch_size, int64_t epochs) {
  core::TrainingConfig t;
  t.optimizer = "sgd";
  t.learning_rate = 1.0;
  t.batch_size = batch_size;
  t.local_epochs = epochs;
  return t;
}

TEST(PlanDpSgdRoundTest, CalibratesTheSmallestNoiseThatKeepsTheWholeJobWithinBudget) {
  const core::TrainingConfig t = Training(256, 2);
  absl::StatusOr<DpSgdSpend> plan = PlanDpSgdRound(DpSgd(3.0), t, 15000, 10);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_DOUBLE_EQ(plan->sampling_rate, 256.0 / 15000);
  EXPECT_DOUBLE_EQ(plan->expected_batch_size, 256.0);
  EXPECT_EQ(plan->steps, 59 * 2);  // ceil(15000 / 256) per epoch
  EXPECT_DOUBLE_EQ(plan->clip_norm, 1.0);
  // Ten rounds at this sigma meet epsilon 3; 1% less noise does not.
  absl::StatusOr<privacy::EpsilonResult> at =
      privacy::ComputeEpsilon(plan->sampling_rate, plan->noise_multiplier, plan->steps * 10, 1e-5);
  ASSERT_TRUE(at.ok());
  EXPECT_LE(at->epsilon, 3.0);
  EXPECT_DOUBLE_EQ(plan->job_epsilon, at->epsilon);
  absl::StatusOr<privacy::EpsilonResult> less =
      privacy::ComputeEpsilon(plan->sampling_rate, plan->noise_multiplier * 0.99, plan->steps * 10, 1e-5);
  ASSERT_TRUE(less.ok());
  EXPECT_GT(less->epsilon, 3.0);
  // More rounds need more noise for the same budget.
  absl::StatusOr<DpSgdSpend> longer = PlanDpSgdRound(DpSgd(3.0), t, 15000, 40);
  ASSERT_TRUE(longer.ok());
  EXPECT_GT(longer->noise_multiplier, plan->noise_multiplier);
}

TEST(PlanDpSgdRoundTest, AGivenNoiseMultiplierIsUsedAndItsJobEpsilonReported) {
  absl::StatusOr<DpSgdSpend> plan = PlanDpSgdRound(DpSgd(8.0, 1.1), Training(64, 1), 6400, 5);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->noise_multiplier, 1.1);
  EXPECT_EQ(plan->steps, 100);
  absl::StatusOr<privacy::EpsilonResult> at = privacy::ComputeEpsilon(0.01, 1.1, 500, 1e-5);
  ASSERT_TRUE(at.ok());
  EXPECT_DOUBLE_EQ(plan->job_epsilon, at->epsilon);
}

TEST(PlanDpSgdRoundTest, MaxStepsPerRoundCapsTheStepsAndABatchAboveTheDataTakesEveryExample) {
  core::TrainingConfig t = Training(64, 3);
  t.max_steps_per_round = 10;
  absl::StatusOr<DpSgdSpend> capped = PlanDpSgdRound(DpSgd(8.0, 1.0), t, 6400, 1);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->steps, 10);
  absl::StatusOr<DpSgdSpend> whole = PlanDpSgdRound(DpSgd(8.0, 1.0), Training(500, 2), 50, 1);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->sampling_rate, 1.0);
  EXPECT_EQ(whole->expected_batch_size, 50.0);
  EXPECT_EQ(whole->steps, 2);
}

TEST(PlanDpSgdRoundTest, RefusesOtherMechanismsGlobalClippingAndBadValuesNamingTheKey) {
  core::PrivacyConfig none;
  absl::StatusOr<DpSgdSpend> plan = PlanDpSgdRound(none, Training(64, 1), 1000, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("privacy.mechanism: expected \"dp_sgd\""));

  core::TrainingConfig clipped = Training(64, 1);
  clipped.max_grad_norm = 1.0;
  plan = PlanDpSgdRound(DpSgd(3.0), clipped, 1000, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("training_config.max_grad_norm: expected 0"));

  plan = PlanDpSgdRound(DpSgd(-1.0), Training(64, 1), 1000, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(std::string(plan.status().message()), "privacy.target_epsilon: expected a number > 0, got -1");

  plan = PlanDpSgdRound(DpSgd(3.0, 0, 0.0), Training(64, 1), 1000, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(std::string(plan.status().message()), "privacy.clip_norm: expected a number > 0, got 0");

  plan = PlanDpSgdRound(DpSgd(3.0), Training(64, 1), 0, 1);
  EXPECT_FALSE(plan.ok());
}

TEST(PlanDpSgdRoundTest, AnUnreachableBudgetIsOutOfRangeNamingTheTarget) {
  // Every example in each of 1000 steps (q = 1): epsilon cannot go below ~0.0036.
  absl::StatusOr<DpSgdSpend> plan = PlanDpSgdRound(DpSgd(0.001), Training(100, 1000), 100, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("privacy.target_epsilon: no noise multiplier"));
}

TEST(PlanDpSgdRoundTest, TheSpendRequestCarriesThePlanForTheLedger) {
  absl::StatusOr<DpSgdSpend> plan = PlanDpSgdRound(DpSgd(3.0), Training(64, 1), 6400, 10);
  ASSERT_TRUE(plan.ok());
  const privacy::SpendRequest request = SpendRequestFor(*plan, "fmnist-dp", 4);
  EXPECT_EQ(request.job, "fmnist-dp");
  EXPECT_EQ(request.round, 4);
  EXPECT_EQ(request.mechanism, privacy::Mechanism::kDpSgd);
  EXPECT_EQ(request.sampling_rate, plan->sampling_rate);
  EXPECT_EQ(request.noise_multiplier, plan->noise_multiplier);
  EXPECT_EQ(request.steps, plan->steps);
  EXPECT_EQ(request.clip_norm, plan->clip_norm);
  EXPECT_TRUE(privacy::ValidateSpendRequest(request).ok());
}

// The real data: the first 2,000 training and 1,000 test examples.
class DpSgdTrainingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetTrainingThreads(1);
    std::ifstream in(kModelsDir + "/niid_cnn.json");
    absl::StatusOr<ModelSpec> spec = ParseModelSpec(json::parse(in));
    ASSERT_TRUE(spec.ok()) << spec.status();
    cnn_ = *spec;
    absl::StatusOr<Dataset> train = ReadFashionMnist(kFashionMnistDir, Split::kTrain);
    ASSERT_TRUE(train.ok()) << train.status();
    train_ = train->Head(2000);
    absl::StatusOr<Dataset> test = ReadFashionMnist(kFashionMnistDir, Split::kTest);
    ASSERT_TRUE(test.ok()) << test.status();
    test_ = test->Head(1000);
    absl::StatusOr<core::ParameterSet> init = InitialParameters(cnn_, 1);
    ASSERT_TRUE(init.ok()) << init.status();
    init_ = std::make_unique<core::ParameterSet>(std::move(*init));
  }

  std::unique_ptr<LocalTrainer> Trainer(Dataset train, uint64_t seed) {
    absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(cnn_, std::move(train), test_, seed);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    return trainer.ok() ? std::move(*trainer) : nullptr;
  }

  ModelSpec cnn_;
  Dataset train_, test_;
  std::unique_ptr<core::ParameterSet> init_;
};

TEST_F(DpSgdTrainingTest, ARoundReportsItsSpendAsPlannedAndLearns) {
  core::TrainingConfig t = Training(64, 2);
  t.learning_rate = 0.5;
  t.momentum = 0.5;
  const core::PrivacyConfig p = DpSgd(8.0);
  std::unique_ptr<LocalTrainer> trainer = Trainer(train_, 7);
  ASSERT_NE(trainer, nullptr);
  absl::StatusOr<RoundResult> result = trainer->TrainRound(*init_, t, 1, 1, p);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(result->dp_sgd.has_value());
  absl::StatusOr<DpSgdSpend> plan = PlanDpSgdRound(p, t, 2000, 1);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(result->dp_sgd->sampling_rate, plan->sampling_rate);
  EXPECT_EQ(result->dp_sgd->noise_multiplier, plan->noise_multiplier);
  EXPECT_EQ(result->dp_sgd->steps, plan->steps);
  EXPECT_EQ(result->metrics.steps, static_cast<uint64_t>(plan->steps));
  // 64 noisy steps on 2,000 examples at epsilon 8: well above chance (0.1).
  EXPECT_GT(result->metrics.eval_accuracy, 0.5);
  EXPECT_GT(result->metrics.train_loss, 0.0);

  absl::StatusOr<RoundResult> plain = trainer->TrainRound(*init_, t, 1, 1);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->dp_sgd.has_value());
}

TEST_F(DpSgdTrainingTest, TwoTrainersWithTheSameJobSeedDrawDifferentNoiseOfTheRightScale) {
  // q = 1 (the batch takes all 50 examples) and one plain SGD step at learning rate 1:
  // delta = -(clipped sum + noise) / 50, and the clipped sum is the same for both trainers,
  // so the two deltas differ by (noise_b - noise_a) / 50, of stddev sqrt(2) sigma C / 50.
  // Over 44,426 coordinates the sample stddev is within 0.34% (one standard error) of that.
  const core::TrainingConfig t = Training(64, 1);
  const core::PrivacyConfig p = DpSgd(100.0, /*noise_multiplier=*/2.0, /*clip_norm=*/0.5);
  std::unique_ptr<LocalTrainer> a = Trainer(train_.Head(50), 42), b = Trainer(train_.Head(50), 42);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  absl::StatusOr<RoundResult> ra = a->TrainRound(*init_, t, 1, 1, p), rb = b->TrainRound(*init_, t, 1, 1, p);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  ASSERT_EQ(ra->dp_sgd->sampling_rate, 1.0);
  ASSERT_EQ(ra->dp_sgd->steps, 1);
  const auto da = ra->delta.floats(), db = rb->delta.floats();
  double sum = 0, sum_squares = 0;
  for (size_t i = 0; i < da.size(); ++i) {
    const double d = static_cast<double>(da[i]) - db[i];
    sum += d;
    sum_squares += d * d;
  }
  const double n = static_cast<double>(da.size());
  const double stddev = std::sqrt(sum_squares / n - (sum / n) * (sum / n));
  const double expected = std::sqrt(2.0) * 2.0 * 0.5 / 50;
  EXPECT_NEAR(stddev / expected, 1.0, 0.03);
}

TEST_F(DpSgdTrainingTest, GlobalClippingUnderDpSgdIsRefused) {
  core::TrainingConfig t = Training(64, 1);
  t.max_grad_norm = 2.0;
  std::unique_ptr<LocalTrainer> trainer = Trainer(train_.Head(100), 1);
  ASSERT_NE(trainer, nullptr);
  absl::StatusOr<RoundResult> result = trainer->TrainRound(*init_, t, 1, 1, DpSgd(3.0));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("training_config.max_grad_norm"));
}

TEST_F(DpSgdTrainingTest, AnEmbeddingModelTrainsUnderDpSgd) {
  // Pixels quantized to 8 levels and looked up in an embedding: the layer types DP-SGD
  // supports besides conv2d, through the trainer.
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(json::parse(R"({"input_shape": [1, 28, 28], "num_classes": 10,
      "layers": [{"type": "embedding", "num_embeddings": 8, "embedding_dim": 2}, {"type": "flatten"},
                 {"type": "layer_norm"}, {"type": "linear", "out_features": 10}]})"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  Dataset quantized = train_.Head(500);
  for (float& v : quantized.features) v = std::floor(v * 7.999f);
  Dataset quantized_test = test_;
  for (float& v : quantized_test.features) v = std::floor(v * 7.999f);
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(*spec, quantized, quantized_test, 3);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  absl::StatusOr<core::ParameterSet> init = InitialParameters(*spec, 3);
  ASSERT_TRUE(init.ok());
  core::TrainingConfig t = Training(50, 3);
  t.learning_rate = 0.5;
  absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*init, t, 1, 1, DpSgd(8.0));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->metrics.eval_accuracy, 0.3);
}

}  // namespace
}  // namespace cohort::training
