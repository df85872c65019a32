#pragma once
// A privacy budget and the validation of every privacy-related input.
//
// Each validator names the input it checks (`key`), so the same function
// serves a job config ("privacy.target_epsilon"), a CLI flag
// ("--target-epsilon") or a ledger field. Messages read
//   privacy.target_epsilon: expected a number > 0, got -1
// NaN and infinities are rejected everywhere: a budget or a noise scale that
// is not a finite number has no meaning.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace cohort::privacy {

// An (epsilon, delta)-DP budget: the most a site allows to be spent on its
// data across all jobs and rounds.
struct PrivacyBudget {
  double epsilon = 0.0;  // > 0
  double delta = 0.0;    // in (0, 1)
};

// Formats a double the way error messages and reports print it: shortest
// form that reads back to the same value where possible ("1e-05", "0.5",
// "nan").
std::string FormatNumber(double value);

// epsilon > 0 and finite.
absl::Status ValidateEpsilon(double epsilon, std::string_view key);
// delta in the open interval (0, 1).
absl::Status ValidateDelta(double delta, std::string_view key);
// noise multiplier (noise stddev / sensitivity) > 0 and finite.
absl::Status ValidateNoiseMultiplier(double sigma, std::string_view key);
// clip norm (L2 bound on one contribution) > 0 and finite.
absl::Status ValidateClipNorm(double clip, std::string_view key);
// Poisson sampling rate in (0, 1].
absl::Status ValidateSamplingRate(double q, std::string_view key);
// number of steps (compositions) >= 1.
absl::Status ValidateSteps(int64_t steps, std::string_view key);

// Checks both fields; keys are "<prefix>.target_epsilon" and
// "<prefix>.target_delta", matching the job config's "privacy" section.
absl::Status ValidatePrivacyBudget(const PrivacyBudget& budget,
                                   std::string_view prefix = "privacy");

}  // namespace cohort::privacy
