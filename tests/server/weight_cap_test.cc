// The per-site cap on a round's FedAvg weight (server/weight_cap.h): water-filling that
// leaves honest equal shares alone and holds any one site to its share.
#include "server/weight_cap.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

namespace cohort::server {
namespace {

std::vector<double> Capped(const std::vector<double>& weights, double share) {
  const double t = WeightCapThreshold(weights, share);
  std::vector<double> out;
  for (double w : weights) out.push_back(std::min(w, t));
  return out;
}

TEST(WeightCap, EqualSharesAreUnchanged) {
  for (size_t n : {2, 3, 4, 10}) {
    const std::vector<double> weights(n, 100);
    EXPECT_EQ(Capped(weights, EffectiveWeightShare(0.5, n)), weights) << n << " sites";
  }
}

TEST(WeightCap, OneHugeClaimIsHeldToTheCap) {
  const std::vector<double> capped = Capped({100, 100, 100, 1e7}, 0.5);
  const double total = std::accumulate(capped.begin(), capped.end(), 0.0);
  EXPECT_DOUBLE_EQ(capped[3] / total, 0.5);
  EXPECT_EQ(capped[0], 100);  // the honest ones keep their weights
}

TEST(WeightCap, TwoLargeClaimsShareTheClampAndNobodyExceedsTheCap) {
  const std::vector<double> capped = Capped({10, 20, 30, 500, 900}, 0.3);
  const double total = std::accumulate(capped.begin(), capped.end(), 0.0);
  for (double w : capped) EXPECT_LE(w / total, 0.3 + 1e-12);
  EXPECT_DOUBLE_EQ(capped[3], capped[4]);
  EXPECT_EQ(capped[2], 30);
}

TEST(WeightCap, ACapBelowOneOverTheCountCannotBeMetYetAndIsRaisedAtClose) {
  EXPECT_EQ(WeightCapThreshold({100}, 0.5), 0);  // one site alone would own everything
  EXPECT_DOUBLE_EQ(EffectiveWeightShare(0.5, 1), 1.0);
  EXPECT_DOUBLE_EQ(EffectiveWeightShare(0.2, 3), 1.0 / 3);
  // At 1/n every weight becomes the same.
  const std::vector<double> capped = Capped({1, 5, 9}, EffectiveWeightShare(0.2, 3));
  EXPECT_DOUBLE_EQ(capped[0], capped[2]);
  EXPECT_DOUBLE_EQ(capped[1], capped[2]);
}

TEST(WeightCap, TheThresholdNeverFallsAsUpdatesArrive) {
  // What makes folding at once safe: a weight under the threshold so far stays unclamped.
  std::vector<double> seen;
  double previous = 0;
  for (double w : {300.0, 50.0, 1e6, 80.0, 80.0, 2e5, 10.0}) {
    seen.push_back(w);
    const double t = WeightCapThreshold(seen, 0.25);
    EXPECT_GE(t, previous) << seen.size() << " updates";
    previous = t;
  }
}

TEST(WeightCap, NoCapMeansNoThreshold) {
  EXPECT_TRUE(std::isinf(WeightCapThreshold({1, 1e9}, 1.0)));
}

}  // namespace
}  // namespace cohort::server
