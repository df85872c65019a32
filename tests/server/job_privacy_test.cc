// Client-level DP at the server: clip weights, the noised fixed-denominator average, the
// accounting over rounds, the budget that ends a job, and its replay after a restart.
#include <gtest/gtest.h>

#include <cmath>

#include "privacy/rdp_accountant.h"
#include "server/job_privacy.h"

namespace cohort::server {
namespace {

core::PrivacyConfig ClientDp(double epsilon, double sigma, double clip) {
  core::PrivacyConfig config;
  config.mechanism = "client_dp";
  config.target_epsilon = epsilon;
  config.target_delta = 1e-5;
  config.noise_multiplier = sigma;
  config.clip_norm = clip;
  return config;
}

TEST(JobPrivacy, AnUpdateIsWeightedByItsClipFactor) {
  auto privacy = JobPrivacy::Create(ClientDp(3, 1.0, 2.0));
  ASSERT_TRUE(privacy.ok()) << privacy.status().message();
  EXPECT_EQ((*privacy)->Weight(1.0), 1.0);
  EXPECT_EQ((*privacy)->Weight(2.0), 1.0);
  EXPECT_DOUBLE_EQ((*privacy)->Weight(8.0), 0.25);
}

TEST(JobPrivacy, OnlyClientDpIsAServerSideMechanism) {
  core::PrivacyConfig config = ClientDp(3, 1, 1);
  config.mechanism = "dp_sgd";
  EXPECT_EQ(JobPrivacy::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobPrivacy, TheRoundIsTheClippedSumOverAFixedDenominatorPlusNoiseOfTheRightScale) {
  const size_t n = 200000;
  auto privacy = JobPrivacy::Create(ClientDp(100, 0.5, 1.0));
  ASSERT_TRUE(privacy.ok());
  ASSERT_TRUE(*(*privacy)->NextRoundFits(ClientDp(100, 0.5, 1.0), /*population=*/10, /*per_round=*/4, 10));
  core::Manifest manifest({{"w", core::DType::kFloat32, {static_cast<int64_t>(n)}}});
  core::ParameterSet global(manifest), next(manifest);
  // Two updates reported, norms 0.5 and 4 (weights 1 and 0.25): FedAvg gave global + s / 1.25.
  for (size_t i = 0; i < n; ++i) {
    global.floats()[i] = 1.0f;
    next.floats()[i] = 1.0f + 0.125f / 1.25f;  // s = 0.125 per coordinate
  }
  absl::StatusOr<nlohmann::json> report = (*privacy)->PrivatizeRound(global, next, {0.5, 4.0}, /*per_round=*/4);
  ASSERT_TRUE(report.ok()) << report.status().message();
  double mean = 0, var = 0;
  for (size_t i = 0; i < n; ++i) mean += next.floats()[i] - 1.0;
  mean /= n;
  for (size_t i = 0; i < n; ++i) var += std::pow(next.floats()[i] - 1.0 - mean, 2);
  var /= n - 1;
  EXPECT_NEAR(mean, 0.125 / 4, 0.001);  // s / per_round
  const double expected_stddev = 0.5 * 1.0 / 4;  // sigma * C / per_round
  EXPECT_NEAR(std::sqrt(var), expected_stddev, expected_stddev * 0.02);
  EXPECT_EQ((*report)["clipped_updates"], 1);
  EXPECT_DOUBLE_EQ((*report)["sampling_rate"].get<double>(), 0.4);
  const double expected_epsilon = privacy::ComputeEpsilon(0.4, 0.5, 1, 1e-5)->epsilon;
  EXPECT_NEAR((*report)["epsilon"].get<double>(), expected_epsilon, 1e-9);
}

TEST(JobPrivacy, TheJobStopsFittingOnceTheNextRoundWouldExceedTheBudget) {
  const core::PrivacyConfig config = ClientDp(2.0, 3.0, 1.0);
  auto privacy = JobPrivacy::Create(config);
  ASSERT_TRUE(privacy.ok());
  core::Manifest manifest({{"w", core::DType::kFloat32, {4}}});
  core::ParameterSet global(manifest), next(manifest);
  int rounds = 0;
  while (*(*privacy)->NextRoundFits(config, 4, 2, 100)) {
    ASSERT_TRUE((*privacy)->PrivatizeRound(global, next, {0.1, 0.1}, 2).ok());
    ASSERT_LT(++rounds, 1000);
  }
  EXPECT_GT(rounds, 0);
  EXPECT_LE((*privacy)->epsilon_spent(), 2.0);
  EXPECT_GT(privacy::ComputeEpsilon(0.5, 3.0, rounds + 1, 1e-5)->epsilon, 2.0);
}

TEST(JobPrivacy, ANoiseMultiplierLeftToTheBudgetLastsTheConfiguredRounds) {
  const core::PrivacyConfig config = ClientDp(3.0, /*sigma=*/0, 1.0);
  auto privacy = JobPrivacy::Create(config);
  ASSERT_TRUE(privacy.ok());
  core::Manifest manifest({{"w", core::DType::kFloat32, {4}}});
  core::ParameterSet global(manifest), next(manifest);
  for (int r = 0; r < 20; ++r) {
    ASSERT_TRUE(*(*privacy)->NextRoundFits(config, 10, 4, 20)) << "round " << r + 1;
    ASSERT_TRUE((*privacy)->PrivatizeRound(global, next, {0.1}, 4).ok());
  }
  EXPECT_LE((*privacy)->epsilon_spent(), 3.0);
  EXPECT_GT((*privacy)->epsilon_spent(), 2.9);
}

TEST(JobPrivacy, ARestartedServerRemembersWhatTheJobSpent) {
  const core::PrivacyConfig config = ClientDp(50, 1.0, 1.0);
  auto first = JobPrivacy::Create(config);
  core::Manifest manifest({{"w", core::DType::kFloat32, {4}}});
  core::ParameterSet global(manifest), next(manifest);
  nlohmann::json rounds = nlohmann::json::array();
  for (int r = 1; r <= 3; ++r) {
    ASSERT_TRUE(*(*first)->NextRoundFits(config, 4, 2, 10));
    nlohmann::json report = *(*first)->PrivatizeRound(global, next, {0.1, 0.2}, 2);
    rounds.push_back({{"round", r}, {"privacy", report}});
  }
  auto second = JobPrivacy::Create(config);
  ASSERT_TRUE((*second)->Restore(rounds).ok());
  EXPECT_DOUBLE_EQ((*second)->epsilon_spent(), (*first)->epsilon_spent());
  ASSERT_TRUE(*(*second)->NextRoundFits(config, 4, 2, 10));
  ASSERT_TRUE(*(*first)->NextRoundFits(config, 4, 2, 10));
  const double a = (*(*first)->PrivatizeRound(global, next, {0.1}, 2))["epsilon"].get<double>();
  const double b = (*(*second)->PrivatizeRound(global, next, {0.1}, 2))["epsilon"].get<double>();
  EXPECT_DOUBLE_EQ(a, b);
}

}  // namespace
}  // namespace cohort::server
