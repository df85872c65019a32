#include "audit/filter.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cohort::audit {
namespace {

// Debian's abseil keeps its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), which std::string_view does not convert to; absl::StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool ActionMatches(std::string_view pattern, std::string_view action) {
  if (absl::EndsWith(Av(pattern), ".*")) {
    // Keep the dot so that "param.*" matches "param.set" but not "params.x".
    return absl::StartsWith(Av(action), Av(pattern.substr(0, pattern.size() - 1)));
  }
  return action == pattern;
}

// Parameters are recorded by their full key ("training_config.learning_rate"); a person
// may ask for the full key or for its last part ("learning_rate").
bool ParameterMatches(std::string_view recorded, std::string_view wanted) {
  if (recorded == wanted) return true;
  return wanted.find('.') == std::string_view::npos && recorded.size() > wanted.size() &&
         absl::EndsWith(Av(recorded), Av(wanted)) && recorded[recorded.size() - wanted.size() - 1] == '.';
}

}  // namespace

bool EntryFilter::Matches(const Entry& entry) const {
  if (actor.has_value() && entry.actor != *actor) return false;
  if (action.has_value() && !ActionMatches(*action, entry.action)) return false;
  if (job.has_value() && entry.target.job != *job) return false;
  if (parameter.has_value() && !ParameterMatches(entry.target.parameter, *parameter)) return false;
  if (participant.has_value() && entry.target.participant != *participant) return false;
  if (since.has_value() && entry.timestamp < *since) return false;
  if (until.has_value() && entry.timestamp >= *until) return false;
  return true;
}

absl::StatusOr<absl::Time> ParseTimeBound(std::string_view text) {
  const std::string input(text);
  absl::Time time;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, input, &time, &error)) return time;
  if (absl::ParseTime("%Y-%m-%d", input, absl::UTCTimeZone(), &time, &error)) return time;
  return absl::InvalidArgumentError(absl::StrCat(
      "time \"", Av(text),
      "\": expected RFC 3339 such as 2024-05-01T12:00:00Z, or a date such as 2024-05-01"));
}

}  // namespace cohort::audit
