#pragma once
// Selecting audit entries, as `cohort audit show` does.

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "audit/entry.h"

namespace cohort::audit {

// Every set member must match; an empty filter matches everything. Members have
// default initialisers so that designated initialisers may leave any out.
struct EntryFilter {
  std::optional<std::string> actor{};  // exact
  // Exact, or a prefix when it ends in ".*": "participant.*" matches
  // participant.add and participant.revoke.
  std::optional<std::string> action{};
  std::optional<std::string> job{};          // target.job, exact
  // target.parameter, exact; a name without a dot also matches a recorded key's last
  // part: "learning_rate" matches "training_config.learning_rate".
  std::optional<std::string> parameter{};
  std::optional<std::string> participant{};  // target.participant, exact
  std::optional<absl::Time> since{};         // entry time >= since
  std::optional<absl::Time> until{};         // entry time <  until

  bool Matches(const Entry& entry) const;
};

// A time bound as a person types it: RFC 3339 ("2024-05-01T12:00:00Z",
// "2024-05-01T14:00:00.5+02:00") or a date ("2024-05-01", midnight UTC).
absl::StatusOr<absl::Time> ParseTimeBound(std::string_view text);

}  // namespace cohort::audit
