#include "privacy/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <utility>

#include "absl/strings/str_cat.h"
#include "privacy/budget.h"

namespace cohort::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The fractional series stops once a term falls below exp(-30) (as TF-Privacy
// and Opacus do, so that results agree with theirs to the last digits); since
// A_alpha >= 1, each neglected term is below 1e-13 of the sum.
constexpr double kLogTermCutoff = -30.0;
// Slowly converging cases (orders just above 1 with large sigma and q near
// 1/2) need tens of thousands of terms; past this the order is dropped.
constexpr int64_t kMaxSeriesTerms = 2'000'000;

// log(exp(a) + exp(b)) without overflow; -inf stands for 0.
double LogAdd(double a, double b) {
  const double lo = std::min(a, b);
  const double hi = std::max(a, b);
  if (lo == -kInf) return hi;
  return std::log1p(std::exp(lo - hi)) + hi;
}

// log(exp(a) - exp(b)); NaN when the result would be negative (the caller
// treats the order as unusable rather than trusting a cancelled sum).
double LogSub(double a, double b) {
  if (a < b) return kNaN;
  if (b == -kInf) return a;
  if (a == b) return -kInf;
  return std::log(std::expm1(a - b)) + b;
}

bool IsIntegerOrder(double order) {
  return order == std::floor(order) && order < 1e9;
}

// Unchecked: 0 < q <= 1, sigma > 0, order > 1.
double RdpOneStep(double q, double sigma, double order) {
  if (q == 1.0) return order / (2.0 * sigma * sigma);
  const double log_a =
      IsIntegerOrder(order)
          ? internal::LogAIntegerOrder(q, sigma, static_cast<int64_t>(order))
          : internal::LogAFractionalOrder(q, sigma, order);
  if (!std::isfinite(log_a)) return kInf;
  // A_alpha >= 1 mathematically; tiny negative values are rounding.
  return std::max(0.0, log_a) / (order - 1.0);
}

double ConvertOrder(double order, double rdp, double delta,
                    DpConversion conversion) {
  if (!std::isfinite(rdp)) return kInf;
  switch (conversion) {
    case DpConversion::kMironov2017:
      return rdp - std::log(delta) / (order - 1.0);
    case DpConversion::kBalle2020:
      break;
  }
  return rdp + std::log1p(-1.0 / order) -
         (std::log(delta) + std::log(order)) / (order - 1.0);
}

absl::Status ValidateOrder(double order) {
  if (!std::isfinite(order) || order <= 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("order: expected a number > 1, got ", FormatNumber(order)));
  }
  return absl::OkStatus();
}

}  // namespace

namespace internal {

double LogErfc(double x) {
  // std::erfc is accurate to the last ulp until it underflows near x = 26.5;
  // past x = 25 the asymptotic expansion
  //   erfc(x) = exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4)
  //             - 15/(8x^6) + 105/(16x^8) - ...)
  // is exact to ~1e-13 relative.
  if (x < 25.0) return std::log(std::erfc(x));
  const double inv = 1.0 / (x * x);
  const double series =
      inv * (-0.5 + inv * (0.75 + inv * (-1.875 + inv * 6.5625)));
  return -x * x - std::log(x) - 0.5 * std::log(std::numbers::pi) +
         std::log1p(series);
}

double LogAIntegerOrder(double q, double sigma, int64_t alpha) {
  // A_alpha = sum_{i=0}^{alpha} C(alpha, i) q^i (1-q)^(alpha-i)
  //           * exp((i^2 - i) / (2 sigma^2)).
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  const double two_var = 2.0 * sigma * sigma;
  double log_a = -kInf;
  double log_binom = 0.0;  // log C(alpha, 0)
  for (int64_t i = 0; i <= alpha; ++i) {
    if (i > 0) {
      log_binom += std::log(static_cast<double>(alpha - i + 1)) -
                   std::log(static_cast<double>(i));
    }
    const double di = static_cast<double>(i);
    const double term = log_binom + di * log_q +
                        static_cast<double>(alpha - i) * log_1mq +
                        (di * di - di) / two_var;
    log_a = LogAdd(log_a, term);
  }
  return log_a;
}

double LogAFractionalOrder(double q, double sigma, double alpha) {
  // A_alpha split at z0, where the two Gaussians' likelihood ratio crosses
  // the mixture weights; each half is an alternating-sign binomial series
  // with erfc tails (arXiv:1908.10530, Sec. 3.3).
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  const double two_var = 2.0 * sigma * sigma;
  const double z0 = sigma * sigma * std::log(1.0 / q - 1.0) + 0.5;
  const double scale = std::numbers::sqrt2 * sigma;
  const double log_half = std::log(0.5);

  double log_a0 = -kInf;
  double log_a1 = -kInf;
  double log_abs_binom = 0.0;  // |C(alpha, 0)|
  bool binom_positive = true;
  for (int64_t i = 0; i < kMaxSeriesTerms; ++i) {
    if (i > 0) {
      // C(alpha, i) = C(alpha, i-1) * (alpha - i + 1) / i.
      const double factor = (alpha - static_cast<double>(i - 1)) /
                            static_cast<double>(i);
      // Integer alpha: C(alpha, i) and every later coefficient are 0.
      if (factor == 0.0) return LogAdd(log_a0, log_a1);
      log_abs_binom += std::log(std::abs(factor));
      if (factor < 0.0) binom_positive = !binom_positive;
    }
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_t0 = log_abs_binom + di * log_q + j * log_1mq;
    const double log_t1 = log_abs_binom + j * log_q + di * log_1mq;
    const double log_e0 = log_half + LogErfc((di - z0) / scale);
    const double log_e1 = log_half + LogErfc((z0 - j) / scale);
    const double log_s0 = log_t0 + (di * di - di) / two_var + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
    if (binom_positive) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
      if (std::isnan(log_a0) || std::isnan(log_a1)) return kNaN;
    }
    if (std::max(log_s0, log_s1) < kLogTermCutoff) {
      return LogAdd(log_a0, log_a1);
    }
  }
  return kNaN;
}

}  // namespace internal

const std::vector<double>& DefaultOrders() {
  static const std::vector<double>* const kOrders = [] {
    auto* orders = new std::vector<double>;
    for (int x = 1; x <= 99; ++x) orders->push_back(1.0 + x / 10.0);
    for (int a = 12; a <= 63; ++a) orders->push_back(a);
    for (double a : {128.0, 256.0, 512.0, 1024.0}) orders->push_back(a);
    return orders;
  }();
  return *kOrders;
}

absl::StatusOr<double> SubsampledGaussianRdp(double q, double sigma,
                                             double order) {
  if (absl::Status s = ValidateSamplingRate(q, "sampling_rate"); !s.ok()) return s;
  if (absl::Status s = ValidateNoiseMultiplier(sigma, "noise_multiplier");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateOrder(order); !s.ok()) return s;
  return RdpOneStep(q, sigma, order);
}

RdpAccountant::RdpAccountant() : RdpAccountant(DefaultOrders()) {}

RdpAccountant::RdpAccountant(std::vector<double> orders)
    : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {}

absl::StatusOr<RdpAccountant> RdpAccountant::WithOrders(
    std::vector<double> orders) {
  if (orders.empty()) {
    return absl::InvalidArgumentError(
        "orders: expected at least one order > 1, got none");
  }
  for (double order : orders) {
    if (absl::Status s = ValidateOrder(order); !s.ok()) return s;
  }
  return RdpAccountant(std::move(orders));
}

absl::Status RdpAccountant::AddSteps(double q, double sigma, int64_t steps) {
  if (absl::Status s = ValidateSamplingRate(q, "sampling_rate"); !s.ok()) return s;
  if (absl::Status s = ValidateNoiseMultiplier(sigma, "noise_multiplier");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateSteps(steps, "steps"); !s.ok()) return s;
  for (size_t k = 0; k < orders_.size(); ++k) {
    rdp_[k] += static_cast<double>(steps) * RdpOneStep(q, sigma, orders_[k]);
  }
  total_steps_ += steps;
  return absl::OkStatus();
}

absl::StatusOr<EpsilonResult> RdpAccountant::GetEpsilon(
    double delta, DpConversion conversion) const {
  if (absl::Status s = ValidateDelta(delta, "delta"); !s.ok()) return s;
  if (total_steps_ == 0) return EpsilonResult{0.0, orders_.front()};
  EpsilonResult best{kInf, kNaN};
  for (size_t k = 0; k < orders_.size(); ++k) {
    const double eps = ConvertOrder(orders_[k], rdp_[k], delta, conversion);
    if (eps < best.epsilon) best = {eps, orders_[k]};
  }
  // Both conversions can dip below 0 for tiny RDP; epsilon = 0 is the truth
  // there (the bound holds for every epsilon >= its value).
  if (std::isfinite(best.epsilon)) best.epsilon = std::max(0.0, best.epsilon);
  return best;
}

absl::StatusOr<EpsilonResult> ComputeEpsilon(double q, double sigma,
                                             int64_t steps, double delta,
                                             DpConversion conversion) {
  if (absl::Status s = ValidateDelta(delta, "delta"); !s.ok()) return s;
  RdpAccountant accountant;
  if (absl::Status s = accountant.AddSteps(q, sigma, steps); !s.ok()) return s;
  return accountant.GetEpsilon(delta, conversion);
}

absl::StatusOr<NoiseResult> NoiseMultiplierFor(double target_epsilon,
                                               double delta, double q,
                                               int64_t steps) {
  if (absl::Status s = ValidateEpsilon(target_epsilon, "target_epsilon");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateDelta(delta, "delta"); !s.ok()) return s;
  if (absl::Status s = ValidateSamplingRate(q, "sampling_rate"); !s.ok()) return s;
  if (absl::Status s = ValidateSteps(steps, "steps"); !s.ok()) return s;

  // Inputs are valid, so ComputeEpsilon cannot fail; epsilon is
  // non-increasing in sigma at every order, hence also after the minimum.
  auto epsilon_at = [&](double sigma) {
    return *ComputeEpsilon(q, sigma, steps, delta);
  };

  // Bracket: eps(lo) > target >= eps(hi).
  double lo = 0.0;
  double hi = 1.0;
  EpsilonResult at_hi = epsilon_at(hi);
  if (at_hi.epsilon > target_epsilon) {
    while (true) {
      lo = hi;
      hi = std::min(2.0 * hi, kMaxNoiseMultiplier);
      at_hi = epsilon_at(hi);
      if (at_hi.epsilon <= target_epsilon) break;
      if (hi >= kMaxNoiseMultiplier) {
        return absl::OutOfRangeError(absl::StrCat(
            "target_epsilon: ", FormatNumber(target_epsilon),
            " is not reachable at delta=", FormatNumber(delta),
            " with sampling_rate=", FormatNumber(q), " and steps=", steps,
            ": even noise_multiplier=", FormatNumber(kMaxNoiseMultiplier),
            " gives epsilon=", FormatNumber(at_hi.epsilon),
            "; raise the target or delta, or lower the steps or the "
            "sampling rate"));
      }
    }
  } else {
    while (true) {
      const double candidate = hi / 2.0;
      if (candidate < kMinNoiseMultiplier) {
        // Noise below this is meaningless; the target is met at the floor.
        return NoiseResult{hi, at_hi.epsilon, at_hi.order};
      }
      const EpsilonResult at_candidate = epsilon_at(candidate);
      if (at_candidate.epsilon > target_epsilon) {
        lo = candidate;
        break;
      }
      hi = candidate;
      at_hi = at_candidate;
    }
  }

  while (hi - lo > kNoiseRelativeTolerance * hi) {
    const double mid = 0.5 * (lo + hi);
    const EpsilonResult at_mid = epsilon_at(mid);
    if (at_mid.epsilon <= target_epsilon) {
      hi = mid;
      at_hi = at_mid;
    } else {
      lo = mid;
    }
  }
  return NoiseResult{hi, at_hi.epsilon, at_hi.order};
}

}  // namespace cohort::privacy
