#include "training/lr_schedule.h"

#include <cmath>
#include <numbers>

#include <gtest/gtest.h>

namespace cohort::training {
namespace {

core::TrainingConfig Config(const char* scheduler, double lr, double min_lr, int64_t warmup) {
  core::TrainingConfig c;
  c.lr_scheduler = scheduler;
  c.learning_rate = lr;
  c.min_learning_rate = min_lr;
  c.warmup_steps = warmup;
  return c;
}

TEST(LearningRateAtTest, ConstantIsTheLearningRateAtEveryStep) {
  const core::TrainingConfig c = Config("constant", 0.05, 0.0, 0);
  for (int64_t step : {0, 1, 99, 100, 1000}) EXPECT_EQ(LearningRateAt(c, step, 100), 0.05) << "step " << step;
}

TEST(LearningRateAtTest, WarmupRampsLinearlyUpToTheLearningRate) {
  const core::TrainingConfig c = Config("constant", 0.1, 0.0, 10);
  // Step s of the warmup uses lr * (s + 1) / warmup_steps: equal increments, full rate at its end.
  for (int64_t step = 0; step < 10; ++step) {
    EXPECT_NEAR(LearningRateAt(c, step, 100), 0.1 * static_cast<double>(step + 1) / 10, 1e-15) << "step " << step;
  }
  for (int64_t step = 1; step < 10; ++step) {
    EXPECT_NEAR(LearningRateAt(c, step, 100) - LearningRateAt(c, step - 1, 100), 0.01, 1e-15) << "step " << step;
  }
  EXPECT_GT(LearningRateAt(c, 0, 100), 0.0) << "the first step must move the model";
  EXPECT_EQ(LearningRateAt(c, 10, 100), 0.1);
  EXPECT_EQ(LearningRateAt(c, 50, 100), 0.1);
}

TEST(LearningRateAtTest, CosineStartsAtTheRateIsHalfWayAtTheMidpointAndReachesTheMinimumAtTheEnd) {
  const core::TrainingConfig c = Config("cosine", 0.1, 0.01, 0);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 0, 100), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 50, 100), (0.1 + 0.01) / 2);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 25, 100), 0.01 + 0.09 * 0.5 * (1 + std::cos(std::numbers::pi / 4)));
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 100, 100), 0.01);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 500, 100), 0.01) << "past the end it stays at the minimum";
  for (int64_t step = 1; step <= 100; ++step) {
    EXPECT_LE(LearningRateAt(c, step, 100), LearningRateAt(c, step - 1, 100)) << "step " << step;
  }
}

TEST(LearningRateAtTest, CosineDecayStartsAfterTheWarmup) {
  const core::TrainingConfig c = Config("cosine", 0.2, 0.0, 20);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 19, 120), 0.2) << "last warmup step";
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 20, 120), 0.2) << "first decay step";
  EXPECT_NEAR(LearningRateAt(c, 70, 120), 0.1, 1e-15) << "midpoint of the 100 decay steps";
  EXPECT_NEAR(LearningRateAt(c, 120, 120), 0.0, 1e-15);
}

TEST(LearningRateAtTest, LinearDecaysInEqualStepsToTheMinimum) {
  const core::TrainingConfig c = Config("linear", 0.1, 0.02, 0);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 0, 80), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 20, 80), 0.02 + 0.08 * 0.75);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 40, 80), 0.06);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 80, 80), 0.02);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 81, 80), 0.02);
  for (int64_t step = 1; step <= 80; ++step) {
    EXPECT_NEAR(LearningRateAt(c, step - 1, 80) - LearningRateAt(c, step, 80), 0.001, 1e-12) << "step " << step;
  }
}

TEST(LearningRateAtTest, ATotalNoLongerThanTheWarmupDoesNotDivideByZero) {
  const core::TrainingConfig c = Config("cosine", 0.1, 0.0, 10);
  const double lr = LearningRateAt(c, 10, 10);
  EXPECT_TRUE(std::isfinite(lr));
  EXPECT_GE(lr, 0.0);
  EXPECT_LE(lr, 0.1);
}

}  // namespace
}  // namespace cohort::training
