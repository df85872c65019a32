#include "privacy/client_dp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace cohort::privacy {
namespace {

TEST(ClientDpTest, L2NormAccumulatesInDouble) {
  // In float, 1e8 + 0.01 == 1e8: a float accumulator would return 10000.
  std::vector<float> values(1'000'000, 0.1f);
  values[0] = 1e4f;
  const double expected = std::sqrt(1e8 + 999'999 * double(0.1f) * double(0.1f));
  EXPECT_NEAR(L2Norm(values), expected, 1e-6);
  EXPECT_GT(L2Norm(values), 10000.49);
}

TEST(ClientDpTest, ClipToNormScalesALargeUpdateDownToTheBound) {
  std::vector<float> values = {3.0f, 4.0f, 0.0f};  // norm 5
  auto scale = ClipToNorm(values, 1.0);
  ASSERT_TRUE(scale.ok());
  EXPECT_DOUBLE_EQ(*scale, 0.2);
  EXPECT_NEAR(L2Norm(values), 1.0, 1e-6);
  EXPECT_FLOAT_EQ(values[0], 0.6f);
  EXPECT_FLOAT_EQ(values[1], 0.8f);
}

TEST(ClientDpTest, ClipToNormLeavesAnUpdateWithinTheBoundUntouched) {
  std::vector<float> values = {0.1f, -0.2f, 0.3f};
  const std::vector<float> before = values;
  auto scale = ClipToNorm(values, 1.0);
  ASSERT_TRUE(scale.ok());
  EXPECT_EQ(*scale, 1.0);
  EXPECT_EQ(values, before);
}

TEST(ClientDpTest, ClipToNormRejectsNonFiniteUpdatesAndBadBounds) {
  std::vector<float> values = {1.0f, NAN, 2.0f};
  auto nan = ClipToNorm(values, 1.0);
  ASSERT_FALSE(nan.ok());
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(values[0], 1.0f);
  std::vector<float> inf = {INFINITY};
  EXPECT_FALSE(ClipToNorm(inf, 1.0).ok());
  std::vector<float> fine = {1.0f};
  EXPECT_EQ(std::string(ClipToNorm(fine, 0).status().message()),
            "clip_norm: expected a number > 0, got 0");
  EXPECT_EQ(fine[0], 1.0f);
}

TEST(ClientDpTest, TestSeedsAreReproducibleAndDistinct) {
  NoiseSource a = NoiseSource::ForTesting(42);
  NoiseSource b = NoiseSource::ForTesting(42);
  NoiseSource c = NoiseSource::ForTesting(43);
  int differ = 0;
  for (int i = 0; i < 2000; ++i) {  // crosses several keystream refills
    const double x = a.NextGaussian();
    EXPECT_EQ(x, b.NextGaussian());
    differ += x != c.NextGaussian();
  }
  EXPECT_EQ(differ, 2000);
}

TEST(ClientDpTest, OsSeededSourcesDiffer) {
  auto a = NoiseSource::FromOsEntropy();
  auto b = NoiseSource::FromOsEntropy();
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  int equal = 0;
  for (int i = 0; i < 100; ++i) equal += a->NextUniform() == b->NextUniform();
  EXPECT_EQ(equal, 0);
}

TEST(ClientDpTest, UniformsLieInTheHalfOpenUnitInterval) {
  NoiseSource noise = NoiseSource::ForTesting(1);
  double sum = 0;
  const int n = 200'000;
  for (int i = 0; i < n; ++i) {
    const double u = noise.NextUniform();
    ASSERT_GT(u, 0.0);
    ASSERT_LE(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);  // ~7 standard errors
}

TEST(ClientDpTest, GaussianNoiseHasTheRequestedDistribution) {
  NoiseSource noise = NoiseSource::ForTesting(7);
  const double stddev = 2.5;
  std::vector<float> values(400'000, 10.0f);
  ASSERT_TRUE(AddGaussianNoise(values, stddev, noise).ok());
  double sum = 0, sum2 = 0, sum4 = 0;
  int within_one = 0, beyond_three = 0;
  for (float v : values) {
    const double z = (v - 10.0) / stddev;
    sum += z;
    sum2 += z * z;
    sum4 += z * z * z * z;
    within_one += std::abs(z) <= 1.0;
    beyond_three += std::abs(z) > 3.0;
  }
  const double n = values.size();
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(sum2 / n), 1.0, 0.01);
  EXPECT_NEAR(sum4 / n, 3.0, 0.06);               // kurtosis of a normal
  EXPECT_NEAR(within_one / n, 0.682689, 0.005);   // P(|Z| <= 1)
  EXPECT_NEAR(beyond_three / n, 0.0026998, 0.0006);  // P(|Z| > 3)
}

TEST(ClientDpTest, ZeroStddevAddsNothingAndNegativeIsRejected) {
  NoiseSource noise = NoiseSource::ForTesting(3);
  std::vector<float> values = {1.0f, 2.0f};
  ASSERT_TRUE(AddGaussianNoise(values, 0.0, noise).ok());
  EXPECT_EQ(values, (std::vector<float>{1.0f, 2.0f}));
  const absl::Status negative = AddGaussianNoise(values, -1.0, noise);
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(values, (std::vector<float>{1.0f, 2.0f}));
}

TEST(ClientDpTest, AdaptiveClippingUsesTheGeometricUpdate) {
  auto clipper = AdaptiveClipper::Create(
      {.initial_bound = 1.0, .target_quantile = 0.5, .learning_rate = 0.2,
       .count_stddev = 0.0});
  ASSERT_TRUE(clipper.ok());
  NoiseSource noise = NoiseSource::ForTesting(0);
  // 30 of 100 within the bound: too few, so the bound grows.
  ASSERT_TRUE(clipper->Update(30, 100, noise).ok());
  EXPECT_DOUBLE_EQ(clipper->bound(), std::exp(-0.2 * (0.3 - 0.5)));
  ASSERT_TRUE(clipper->Update(100, 100, noise).ok());
  EXPECT_DOUBLE_EQ(clipper->bound(),
                   std::exp(-0.2 * (0.3 - 0.5)) * std::exp(-0.2 * 0.5));
  EXPECT_TRUE(clipper->IsWithinBound(0.5));
  EXPECT_FALSE(clipper->IsWithinBound(2.0));
}

TEST(ClientDpTest, AdaptiveClippingConvergesToTheTargetQuantile) {
  // Client update norms uniform on [0, 10]: the 0.5 quantile is 5, the 0.8
  // quantile 8. 100 clients per round, count noise m/20 as the paper
  // suggests.
  for (double target : {0.5, 0.8}) {
    auto clipper = AdaptiveClipper::Create(
        {.initial_bound = 0.1, .target_quantile = target, .learning_rate = 0.2,
         .count_stddev = 5.0});
    ASSERT_TRUE(clipper.ok());
    NoiseSource noise = NoiseSource::ForTesting(11);
    double late_sum = 0;
    for (int round = 0; round < 400; ++round) {
      int within = 0;
      for (int client = 0; client < 100; ++client) {
        within += clipper->IsWithinBound(10.0 * noise.NextUniform());
      }
      ASSERT_TRUE(clipper->Update(within, 100, noise).ok());
      if (round >= 300) late_sum += clipper->bound();
    }
    EXPECT_NEAR(late_sum / 100, 10.0 * target, 0.5) << "target " << target;
  }
}

TEST(ClientDpTest, AdaptiveClippingValidatesItsInputs) {
  EXPECT_EQ(std::string(AdaptiveClipper::Create({.initial_bound = 0})
                            .status()
                            .message()),
            "adaptive_clipping.initial_bound: expected a number > 0, got 0");
  EXPECT_FALSE(AdaptiveClipper::Create({.target_quantile = 1.5}).ok());
  EXPECT_FALSE(AdaptiveClipper::Create({.learning_rate = 0}).ok());
  auto clipper = AdaptiveClipper::Create({});
  ASSERT_TRUE(clipper.ok());
  NoiseSource noise = NoiseSource::ForTesting(0);
  EXPECT_FALSE(clipper->Update(5, 4, noise).ok());
  EXPECT_FALSE(clipper->Update(0, 0, noise).ok());
  EXPECT_EQ(clipper->bound(), 0.1);
}

TEST(ClientDpTest, UpdateNoiseMultiplierLeavesRoomForTheCountNoise) {
  // z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2) (Andrew et al. 2021, Thm. 1).
  auto z = AdaptiveClipper::UpdateNoiseMultiplier(1.0, 5.0);
  ASSERT_TRUE(z.ok());
  EXPECT_DOUBLE_EQ(*z, 1.0 / std::sqrt(1.0 - 1.0 / 100.0));
  // Composing the two back gives the total.
  EXPECT_NEAR(std::pow(std::pow(*z, -2) + std::pow(10.0, -2), -0.5), 1.0, 1e-12);
  EXPECT_FALSE(AdaptiveClipper::UpdateNoiseMultiplier(1.0, 0.5).ok());
  EXPECT_FALSE(AdaptiveClipper::UpdateNoiseMultiplier(1.0, 0.0).ok());
}

}  // namespace
}  // namespace cohort::privacy
