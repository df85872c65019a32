#include "server/weight_cap.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>

namespace cohort::server {

double WeightCapThreshold(std::vector<double> weights, double share) {
  constexpr double kNone = std::numeric_limits<double>::infinity();
  if (share >= 1.0 || weights.empty()) return kNone;
  std::sort(weights.begin(), weights.end(), std::greater<>());
  // With the m largest clamped to T: T = share * (m * T + rest), so T = share * rest /
  // (1 - share * m), where rest is the sum of the others; it is the threshold when it
  // lies between the largest unclamped weight and the smallest clamped one.
  double rest = std::accumulate(weights.begin(), weights.end(), 0.0);
  // Equal shares at exactly 1/n meet the bounds only up to rounding.
  constexpr double kSlack = 1e-12;
  for (size_t m = 0; m < weights.size(); ++m) {
    const double denominator = 1.0 - share * static_cast<double>(m);
    if (denominator <= 0) break;
    const double threshold = share * rest / denominator;
    const bool largest_unclamped_fits = weights[m] <= threshold * (1 + kSlack);
    const bool clamped_are_above = m == 0 || weights[m - 1] >= threshold * (1 - kSlack);
    if (largest_unclamped_fits && clamped_are_above) return std::max(threshold, weights[m]);
    rest -= weights[m];
  }
  return 0;
}

double EffectiveWeightShare(double share, size_t reporting) {
  if (reporting == 0) return share;
  return std::max(share, 1.0 / static_cast<double>(reporting));
}

}  // namespace cohort::server
