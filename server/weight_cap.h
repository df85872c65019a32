#pragma once
// The cap on one site's share of a round's aggregate weight (federation.max_weight_share).
//
// FedAvg weighs each update by the samples its site declared. Unchecked, one site that
// declares a huge count owns the average and can replace the global model with anything
// under the norm bound. With a cap s, weights are clamped by water-filling: every weight
// above a threshold T becomes T, where T = s * (sum of the clamped weights), so no site
// holds more than s of the total and weights at or below T (honest, equal shares among
// at least 1/s sites) are unchanged. With n sites a share below 1/n cannot be met; the
// effective cap is max(s, 1/n), which at 1/n makes every weight equal.

#include <cstddef>
#include <vector>

namespace cohort::server {

// The threshold T for `weights` under cap `share` in (0, 1]: clamp each weight to
// min(w, T). Infinity when nothing needs clamping (share >= 1, or no weights); 0 when
// the cap cannot be met by these weights alone (share * count < 1: more sites must come).
//
// Adding weights or raising `share` never lowers T, so an update whose weight is at or
// below the T of the updates seen so far keeps its weight whatever else arrives: it can
// be folded at once.
double WeightCapThreshold(std::vector<double> weights, double share);

// The cap in force for a round that `reporting` sites contributed to: max(share, 1/n).
double EffectiveWeightShare(double share, size_t reporting);

}  // namespace cohort::server
