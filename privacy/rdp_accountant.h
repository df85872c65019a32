#pragma once
// Renyi-DP accounting for the Poisson-subsampled Gaussian mechanism (the
// mechanism of DP-SGD and of client-level DP in federated rounds).
//
// Mechanism: each record (example, or client) is included in a step
// independently with probability q; the sum of the included contributions,
// each clipped to L2 norm C, gets N(0, (sigma*C)^2) noise per coordinate.
// sigma is the noise multiplier.
//
// RDP of one step at order alpha is log(A_alpha) / (alpha - 1) with A_alpha
// the alpha-th moment of the privacy loss of the mixture
// (1-q) N(0, sigma^2) + q N(1, sigma^2) against N(0, sigma^2)
// (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled
// Gaussian Mechanism", arXiv:1908.10530, Sec. 3.3). Integer orders use the
// finite binomial sum; fractional orders use the two-sided infinite series
// with erfc tails, summed in log space (the method of TF-Privacy and
// Opacus). q == 1 is the plain Gaussian mechanism: alpha / (2 sigma^2).
//
// RDP composes by addition at each order, so steps with different (q, sigma)
// (rounds with different settings, several jobs on the same data) add into
// one accountant. The (epsilon, delta) guarantee is the minimum over the
// order grid of the conversion
//   eps(alpha) = rdp(alpha) + log1p(-1/alpha)
//                - (log(delta) + log(alpha)) / (alpha - 1)
// (Balle et al. 2020, "Hypothesis Testing Interpretations and Renyi
// Differential Privacy", Thm. 21; Canonne, Kamath, Steinke 2020, Prop. 12;
// the conversion of Opacus's get_privacy_spent and of dp_accounting).
// The older conversion rdp(alpha) - log(delta) / (alpha - 1) (Mironov 2017,
// Prop. 3) is kept only to compare with numbers published before 2021.
//
// Thread safety: RdpAccountant is a value type; const methods may be called
// concurrently, mutation needs external synchronisation.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::privacy {

// RDP -> (epsilon, delta) conversion; see the file comment.
enum class DpConversion {
  kBalle2020,    // tight; the default everywhere in Cohort
  kMironov2017,  // classic; looser by roughly log(alpha) / (alpha - 1)
};

struct EpsilonResult {
  double epsilon = 0.0;  // +inf when no order gives a finite bound
  double order = 0.0;    // the order at which the minimum is reached
};

struct NoiseResult {
  double noise_multiplier = 0.0;  // smallest sigma meeting the target, to tolerance
  double epsilon = 0.0;           // the epsilon it achieves (<= target)
  double order = 0.0;             // the best order at that sigma
};

// The order grid: 1 + x/10 for x in 1..99 (1.1 .. 10.9), the integers
// 12..63 (the grid of Opacus and TF-Privacy), plus 128, 256, 512, 1024 for
// large noise multipliers and tight targets, where the optimum moves up.
const std::vector<double>& DefaultOrders();

// NoiseMultiplierFor searches sigma in [kMinNoiseMultiplier,
// kMaxNoiseMultiplier] and stops when the bracket is narrower than
// kNoiseRelativeTolerance * sigma: the returned sigma meets the target and is
// at most 0.01% above the smallest sigma that does (on the same order grid).
inline constexpr double kMinNoiseMultiplier = 1e-3;
inline constexpr double kMaxNoiseMultiplier = 1e5;
inline constexpr double kNoiseRelativeTolerance = 1e-4;

// RDP of a single step at one order (> 1). +inf where the series cannot be
// evaluated (an order the conversion then ignores).
absl::StatusOr<double> SubsampledGaussianRdp(double q, double sigma,
                                             double order);

// Accumulates RDP over phases of steps and converts to (epsilon, delta).
class RdpAccountant {
 public:
  // Uses DefaultOrders().
  RdpAccountant();
  // A custom grid; every order must be finite and > 1.
  static absl::StatusOr<RdpAccountant> WithOrders(std::vector<double> orders);

  // Composes `steps` steps with sampling rate q in (0, 1] and noise
  // multiplier sigma > 0. On error nothing is added.
  absl::Status AddSteps(double q, double sigma, int64_t steps);

  // The (epsilon, delta) guarantee of everything added so far; epsilon is 0
  // before any step. delta must be in (0, 1).
  absl::StatusOr<EpsilonResult> GetEpsilon(
      double delta, DpConversion conversion = DpConversion::kBalle2020) const;

  const std::vector<double>& orders() const { return orders_; }
  // Accumulated RDP at each order, same length as orders().
  const std::vector<double>& rdp() const { return rdp_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  explicit RdpAccountant(std::vector<double> orders);

  std::vector<double> orders_;
  std::vector<double> rdp_;
  int64_t total_steps_ = 0;
};

// Epsilon of `steps` steps at (q, sigma), on the default grid.
absl::StatusOr<EpsilonResult> ComputeEpsilon(
    double q, double sigma, int64_t steps, double delta,
    DpConversion conversion = DpConversion::kBalle2020);

// The smallest noise multiplier for which `steps` steps at sampling rate q
// stay within (target_epsilon, delta), found by bracketing then bisection
// (see kNoiseRelativeTolerance). OutOfRange when the target cannot be met
// with sigma <= kMaxNoiseMultiplier (the order grid bounds how small epsilon
// can get); InvalidArgument for bad inputs.
absl::StatusOr<NoiseResult> NoiseMultiplierFor(double target_epsilon,
                                               double delta, double q,
                                               int64_t steps);

// The series themselves, exposed so tests can compare the fractional-order
// series with the integer-order sum at the same order. Require 0 < q < 1,
// sigma > 0. Return log(A_alpha), or NaN if the series failed to converge.
namespace internal {
double LogAIntegerOrder(double q, double sigma, int64_t alpha);
double LogAFractionalOrder(double q, double sigma, double alpha);
// log(erfc(x)), accurate where erfc(x) underflows.
double LogErfc(double x);
}  // namespace internal

}  // namespace cohort::privacy
