#include "privacy/budget.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace cohort::privacy {
namespace {

std::string MessageOf(const absl::Status& status) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

TEST(BudgetTest, AcceptsAValidBudget) {
  EXPECT_TRUE(ValidatePrivacyBudget({8.0, 1e-5}).ok());
  EXPECT_TRUE(ValidatePrivacyBudget({0.01, 0.5}).ok());
}

TEST(BudgetTest, RejectsANonPositiveEpsilonNamingTheConfigKey) {
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({-1, 1e-5})),
            "privacy.target_epsilon: expected a number > 0, got -1");
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({0, 1e-5})),
            "privacy.target_epsilon: expected a number > 0, got 0");
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget(
                {std::numeric_limits<double>::infinity(), 1e-5})),
            "privacy.target_epsilon: expected a number > 0, got inf");
}

TEST(BudgetTest, RejectsADeltaOutsideTheOpenUnitInterval) {
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({1, 0})),
            "privacy.target_delta: expected a number in (0, 1), got 0");
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({1, 1})),
            "privacy.target_delta: expected a number in (0, 1), got 1");
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({1, 1.5})),
            "privacy.target_delta: expected a number in (0, 1), got 1.5");
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({1, NAN})),
            "privacy.target_delta: expected a number in (0, 1), got nan");
}

TEST(BudgetTest, UsesTheGivenKeyPrefix) {
  EXPECT_EQ(MessageOf(ValidatePrivacyBudget({-2.5, 1e-5}, "site.budget")),
            "site.budget.target_epsilon: expected a number > 0, got -2.5");
}

TEST(BudgetTest, ValidatesEachMechanismParameter) {
  EXPECT_EQ(MessageOf(ValidateNoiseMultiplier(0, "privacy.noise_multiplier")),
            "privacy.noise_multiplier: expected a number > 0, got 0");
  EXPECT_EQ(MessageOf(ValidateClipNorm(-0.5, "privacy.clip_norm")),
            "privacy.clip_norm: expected a number > 0, got -0.5");
  EXPECT_EQ(MessageOf(ValidateSamplingRate(0, "privacy.sampling_rate")),
            "privacy.sampling_rate: expected a number in (0, 1], got 0");
  EXPECT_EQ(MessageOf(ValidateSamplingRate(1.01, "q")),
            "q: expected a number in (0, 1], got 1.01");
  EXPECT_TRUE(ValidateSamplingRate(1.0, "q").ok());
  EXPECT_EQ(MessageOf(ValidateSteps(0, "privacy.steps")),
            "privacy.steps: expected an integer >= 1, got 0");
  EXPECT_EQ(MessageOf(ValidateSteps(-3, "--steps")),
            "--steps: expected an integer >= 1, got -3");
  EXPECT_EQ(MessageOf(ValidateEpsilon(-1, "--target-epsilon")),
            "--target-epsilon: expected a number > 0, got -1");
  EXPECT_EQ(MessageOf(ValidateDelta(2, "--delta")),
            "--delta: expected a number in (0, 1), got 2");
}

TEST(BudgetTest, FormatNumberReadsBackExactly) {
  for (double value : {1e-5, 0.1, 1.1, 2.5966555286883683, 256.0 / 60000}) {
    EXPECT_EQ(std::stod(FormatNumber(value)), value);
  }
  EXPECT_EQ(FormatNumber(1e-5), "1e-05");
  EXPECT_EQ(FormatNumber(0.5), "0.5");
  EXPECT_EQ(FormatNumber(-1), "-1");
}

}  // namespace
}  // namespace cohort::privacy
