#pragma once
// The state of one federated round, as a pure object: events in (client reported, client
// failed, time passed), decisions out (wait, close, retry). No threads, no network, no
// clock of its own, so every path is testable directly.

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cohort::core {

using Clock = std::chrono::steady_clock;

// Picks `count` of `candidates` uniformly at random, reproducibly for (seed, round, attempt).
// Returns them sorted; all candidates when there are no more than `count`.
std::vector<std::string> SelectClients(std::vector<std::string> candidates, size_t count, uint64_t seed,
                                       uint64_t round, uint64_t attempt);

class RoundTracker {
 public:
  enum class Decision { kWait, kClose, kRetry };

  RoundTracker(size_t min_clients, Clock::duration timeout) : min_clients_(min_clients), timeout_(timeout) {}

  // New limits (a runtime parameter change) take effect when the next round opens.
  void SetLimits(size_t min_clients, Clock::duration timeout) {
    min_clients_ = min_clients;
    timeout_ = timeout;
  }
  void Open(uint64_t round, std::vector<std::string> selected, Clock::time_point now);
  void CloseRound() { open_ = false; }

  bool open() const { return open_; }
  uint64_t round() const { return round_; }
  const std::set<std::string>& selected() const { return selected_; }
  const std::set<std::string>& reported() const { return reported_; }
  const std::set<std::string>& failed() const { return failed_; }
  bool IsSelected(const std::string& client) const { return selected_.contains(client); }
  Clock::time_point deadline() const { return deadline_; }

  // OK when `client` may push an update for `round` now; otherwise FailedPrecondition or
  // PermissionDenied naming the reason (round closed, wrong round, not selected, already
  // reported, excluded after a failure).
  absl::Status CheckMayReport(const std::string& client, uint64_t round) const;
  void MarkReported(const std::string& client);
  // A selected client that will not report this round (lost, or its update was rejected).
  void MarkFailed(const std::string& client);

  Decision Decide(Clock::time_point now) const;
  // Why Decide answered as it did, for the log.
  std::string Explain(Clock::time_point now) const;

 private:
  size_t min_clients_;
  Clock::duration timeout_;
  bool open_ = false;
  uint64_t round_ = 0;
  Clock::time_point deadline_{};
  std::set<std::string> selected_, reported_, failed_;
};

}  // namespace cohort::core
