#include "privacy/report.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "privacy/budget.h"
#include "privacy/rdp_accountant.h"

namespace cohort::privacy {
namespace {

using Json = nlohmann::ordered_json;

// Inputs echoed for people: six significant digits ("0.00426667").
std::string Short(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

std::string Fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, value);
  return buffer;
}

}  // namespace

absl::StatusOr<std::string> EpsilonReport(const EpsilonQuery& query, bool json) {
  if (absl::Status s = ValidateSamplingRate(query.sampling_rate, "--sampling-rate");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ValidateNoiseMultiplier(query.noise_multiplier, "--noise-multiplier");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateSteps(query.steps, "--steps"); !s.ok()) return s;
  if (absl::Status s = ValidateDelta(query.delta, "--delta"); !s.ok()) return s;

  auto result = ComputeEpsilon(query.sampling_rate, query.noise_multiplier,
                               query.steps, query.delta);
  if (!result.ok()) return result.status();

  if (json) {
    Json out;
    out["epsilon"] = result->epsilon;
    out["delta"] = query.delta;
    out["best_order"] = result->order;
    out["sampling_rate"] = query.sampling_rate;
    out["noise_multiplier"] = query.noise_multiplier;
    out["steps"] = query.steps;
    return out.dump() + "\n";
  }
  return absl::StrCat("epsilon = ", Fixed(result->epsilon, 4), " at delta = ",
                      FormatNumber(query.delta), " (best RDP order ",
                      FormatNumber(result->order), ") for ", query.steps,
                      " steps at sampling rate ",
                      Short(query.sampling_rate), " and noise multiplier ",
                      Short(query.noise_multiplier), "\n");
}

absl::StatusOr<std::string> NoiseReport(const NoiseQuery& query, bool json) {
  if (absl::Status s = ValidateEpsilon(query.target_epsilon, "--target-epsilon");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateSamplingRate(query.sampling_rate, "--sampling-rate");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateSteps(query.steps, "--steps"); !s.ok()) return s;
  if (absl::Status s = ValidateDelta(query.delta, "--delta"); !s.ok()) return s;

  auto result = NoiseMultiplierFor(query.target_epsilon, query.delta,
                                   query.sampling_rate, query.steps);
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kOutOfRange) {
      // Name the flag, as for any other bad input.
      std::string message(result.status().message());
      constexpr std::string_view kKey = "target_epsilon:";
      if (message.starts_with(kKey)) {
        message = "--target-epsilon:" + message.substr(kKey.size());
      }
      return absl::OutOfRangeError(message);
    }
    return result.status();
  }

  if (json) {
    Json out;
    out["noise_multiplier"] = result->noise_multiplier;
    out["epsilon"] = result->epsilon;
    out["target_epsilon"] = query.target_epsilon;
    out["delta"] = query.delta;
    out["best_order"] = result->order;
    out["sampling_rate"] = query.sampling_rate;
    out["steps"] = query.steps;
    out["relative_tolerance"] = kNoiseRelativeTolerance;
    return out.dump() + "\n";
  }
  return absl::StrCat(
      "noise multiplier = ", Fixed(result->noise_multiplier, 4),
      " gives epsilon = ", Fixed(result->epsilon, 4), " <= ",
      FormatNumber(query.target_epsilon), " at delta = ",
      FormatNumber(query.delta), " (best RDP order ",
      FormatNumber(result->order), ") for ", query.steps,
      " steps at sampling rate ", Short(query.sampling_rate), "\n");
}

}  // namespace cohort::privacy
