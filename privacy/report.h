#pragma once
// The text and JSON behind `cohort privacy epsilon` and `cohort privacy
// noise`, kept here so GoogleTest covers them; cli/privacy_command.cc only
// parses flags and prints. Validation errors name the CLI flag
// ("--sampling-rate: expected a number in (0, 1], got 0") and are
// InvalidArgument; an unreachable target is OutOfRange. The CLI maps both to
// exit code 2.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace cohort::privacy {

struct EpsilonQuery {
  double sampling_rate = 0.0;     // --sampling-rate
  double noise_multiplier = 0.0;  // --noise-multiplier
  int64_t steps = 0;              // --steps
  double delta = 0.0;             // --delta
};

struct NoiseQuery {
  double target_epsilon = 0.0;  // --target-epsilon
  double sampling_rate = 0.0;   // --sampling-rate
  int64_t steps = 0;            // --steps
  double delta = 0.0;           // --delta
};

// One line of text, or one JSON object
// {"epsilon","delta","best_order","sampling_rate","noise_multiplier","steps"},
// each ending in '\n'.
absl::StatusOr<std::string> EpsilonReport(const EpsilonQuery& query, bool json);

// One line of text, or one JSON object {"noise_multiplier","epsilon",
// "target_epsilon","delta","best_order","sampling_rate","steps",
// "relative_tolerance"}, each ending in '\n'.
absl::StatusOr<std::string> NoiseReport(const NoiseQuery& query, bool json);

}  // namespace cohort::privacy
