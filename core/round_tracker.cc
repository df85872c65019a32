#include "core/round_tracker.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace cohort::core {

std::vector<std::string> SelectClients(std::vector<std::string> candidates, size_t count, uint64_t seed,
                                       uint64_t round, uint64_t attempt) {
  std::sort(candidates.begin(), candidates.end());
  if (candidates.size() > count) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull ^ (round << 20) ^ attempt);
    // Partial Fisher-Yates: the first `count` entries become a uniform sample.
    for (size_t i = 0; i < count; ++i) {
      std::uniform_int_distribution<size_t> pick(i, candidates.size() - 1);
      std::swap(candidates[i], candidates[pick(rng)]);
    }
    candidates.resize(count);
    std::sort(candidates.begin(), candidates.end());
  }
  return candidates;
}

void RoundTracker::Open(uint64_t round, std::vector<std::string> selected, Clock::time_point now) {
  open_ = true;
  round_ = round;
  deadline_ = now + timeout_;
  selected_ = std::set<std::string>(selected.begin(), selected.end());
  reported_.clear();
  failed_.clear();
}

absl::Status RoundTracker::CheckMayReport(const std::string& client, uint64_t round) const {
  if (!open_ || round != round_) {
    return absl::FailedPreconditionError(absl::StrCat("round ", round, " is not open (the open round is ",
                                                      open_ ? absl::StrCat(round_) : "none", ")"));
  }
  if (!selected_.contains(client)) {
    return absl::PermissionDeniedError(
        absl::StrCat("client ", client, " was not selected for round ", round));
  }
  if (reported_.contains(client)) {
    return absl::AlreadyExistsError(absl::StrCat("client ", client, " already reported round ", round));
  }
  if (failed_.contains(client)) {
    return absl::FailedPreconditionError(
        absl::StrCat("client ", client, " was excluded from round ", round, " after a failure"));
  }
  return absl::OkStatus();
}

void RoundTracker::MarkReported(const std::string& client) {
  // A client excluded after a failure stays excluded for the round.
  if (selected_.contains(client) && !failed_.contains(client)) reported_.insert(client);
}

void RoundTracker::MarkFailed(const std::string& client) {
  if (selected_.contains(client) && !reported_.contains(client)) failed_.insert(client);
}

RoundTracker::Decision RoundTracker::Decide(Clock::time_point now) const {
  if (!open_) return Decision::kWait;
  const bool enough = reported_.size() >= min_clients_;
  const size_t outstanding = selected_.size() - reported_.size() - failed_.size();
  if (outstanding == 0) return enough ? Decision::kClose : Decision::kRetry;
  // Too many failures: the minimum can no longer be reached, so don't wait out the deadline.
  if (reported_.size() + outstanding < min_clients_) return Decision::kRetry;
  if (now >= deadline_) return enough ? Decision::kClose : Decision::kRetry;
  return Decision::kWait;
}

std::string RoundTracker::Explain(Clock::time_point now) const {
  const std::string counts = absl::StrCat(reported_.size(), " of ", selected_.size(), " selected clients reported, ",
                                          failed_.size(), " failed, minimum ", min_clients_);
  switch (Decide(now)) {
    case Decision::kWait: return absl::StrCat("waiting: ", counts);
    case Decision::kClose:
      return absl::StrCat(now >= deadline_ ? "deadline reached: " : "all reported: ", counts);
    case Decision::kRetry: return absl::StrCat("minimum not met: ", counts);
  }
  return counts;
}

}  // namespace cohort::core
