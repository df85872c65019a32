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

TEST(StepsOfRoundTest, MaxStepsIsTheWholeJobSpreadOverTheRounds) {
  core::TrainingConfig c;
  c.max_steps = 10;
  int64_t sum = 0, next = 0;
  for (uint64_t round = 1; round <= 3; ++round) {
    const RoundSteps r = StepsOfRound(c, /*num_examples=*/100000, round, 3);
    EXPECT_EQ(r.first_step, next) << round;
    EXPECT_EQ(r.total_steps, 10);
    next = r.first_step + r.steps;
    sum += r.steps;
  }
  EXPECT_EQ(sum, 10);
  EXPECT_EQ(StepsOfRound(c, 100000, 1, 3).steps, 3);
  EXPECT_EQ(StepsOfRound(c, 100000, 3, 3).steps, 4);
}

TEST(StepsOfRoundTest, AccumulationCountsOptimizerStepsNotBatches) {
  core::TrainingConfig c;
  c.batch_size = 10;
  c.local_epochs = 2;
  EXPECT_EQ(StepsOfRound(c, 95, 1, 5).steps, 20);  // 10 batches per epoch
  c.gradient_accumulation_steps = 4;
  const RoundSteps r = StepsOfRound(c, 95, 2, 5);
  EXPECT_EQ(r.steps, 5);  // 20 batches, 4 per step
  EXPECT_EQ(r.first_step, 5);
  EXPECT_EQ(r.total_steps, 25);
}

TEST(PlateauScheduleTest, CutsAfterMoreThanPatienceRoundsWithoutImprovement) {
  core::TrainingConfig c;
  c.lr_scheduler = "plateau";
  c.plateau_factor = 0.5;
  c.plateau_patience = 1;
  PlateauSchedule plateau(c);
  plateau.Observe(2.0);
  plateau.Observe(1.5);  // better
  EXPECT_DOUBLE_EQ(plateau.factor(), 1.0);
  plateau.Observe(1.6);  // 1 bad round: within patience
  EXPECT_DOUBLE_EQ(plateau.factor(), 1.0);
  plateau.Observe(1.5);  // not better than the best by the threshold: 2 bad rounds
  EXPECT_DOUBLE_EQ(plateau.factor(), 0.5);
  plateau.Observe(std::nan(""));
  plateau.Observe(1.7);
  EXPECT_DOUBLE_EQ(plateau.factor(), 0.25);
  plateau.Observe(1.0);  // improvement resets the count
  plateau.Observe(1.1);
  EXPECT_DOUBLE_EQ(plateau.factor(), 0.25);
}

TEST(LearningRateAtTest, PlateauIsConstantBetweenItsCuts) {
  core::TrainingConfig c = Config("plateau", 0.1, 0.0, 2);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 0, 100), 0.05);  // warmup still applies
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 50, 100), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 99, 100), 0.1);
}

}  // namespace
}  // namespace cohort::training
