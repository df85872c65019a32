#include "privacy/budget.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace cohort::privacy {
namespace {

absl::Status Invalid(std::string_view key, std::string_view expected,
                     std::string_view got) {
  std::string message(key);
  message.append(": expected ").append(expected).append(", got ").append(got);
  return absl::InvalidArgumentError(message);
}

}  // namespace

std::string FormatNumber(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // The shortest %g precision that reads back exactly; 17 always does.
  char buffer[64];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

absl::Status ValidateEpsilon(double epsilon, std::string_view key) {
  if (!std::isfinite(epsilon) || epsilon <= 0) {
    return Invalid(key, "a number > 0", FormatNumber(epsilon));
  }
  return absl::OkStatus();
}

absl::Status ValidateDelta(double delta, std::string_view key) {
  if (!std::isfinite(delta) || delta <= 0 || delta >= 1) {
    return Invalid(key, "a number in (0, 1)", FormatNumber(delta));
  }
  return absl::OkStatus();
}

absl::Status ValidateNoiseMultiplier(double sigma, std::string_view key) {
  if (!std::isfinite(sigma) || sigma <= 0) {
    return Invalid(key, "a number > 0", FormatNumber(sigma));
  }
  return absl::OkStatus();
}

absl::Status ValidateClipNorm(double clip, std::string_view key) {
  if (!std::isfinite(clip) || clip <= 0) {
    return Invalid(key, "a number > 0", FormatNumber(clip));
  }
  return absl::OkStatus();
}

absl::Status ValidateSamplingRate(double q, std::string_view key) {
  if (!std::isfinite(q) || q <= 0 || q > 1) {
    return Invalid(key, "a number in (0, 1]", FormatNumber(q));
  }
  return absl::OkStatus();
}

absl::Status ValidateSteps(int64_t steps, std::string_view key) {
  if (steps < 1) {
    return Invalid(key, "an integer >= 1", absl::StrCat(steps));
  }
  return absl::OkStatus();
}

absl::Status ValidatePrivacyBudget(const PrivacyBudget& budget,
                                   std::string_view prefix) {
  const std::string base(prefix);
  if (absl::Status s = ValidateEpsilon(budget.epsilon, base + ".target_epsilon");
      !s.ok()) {
    return s;
  }
  return ValidateDelta(budget.delta, base + ".target_delta");
}

}  // namespace cohort::privacy
