#pragma once
// The per-client call rate (core/limits.h: kClientCallsPerSecond, kClientCallBurst): one
// token bucket per authenticated caller identity (the certificate's name), asked once per
// call by AuthorizeCaller (server/call_checks.h), before the permission table. A stream
// counts once, when it opens, whatever number of messages it carries, so long-polled
// PullTasks, chunked uploads and the vertical exchange cost one token each.
//
// Memory stays bounded whatever names call: a bucket that has refilled is the same as no
// bucket, so refilled buckets are dropped (swept at most once per refill time), and past
// `max_callers` the caller seen longest ago is dropped too. Every name needs a certificate
// the federation's CA issued, so that last case is a misconfiguration, not an attack.
//
// Thread-safe; Admit takes one short mutex and does no I/O.

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "core/limits.h"

namespace cohort::server {

class CallRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    double calls_per_second = core::kClientCallsPerSecond;
    double burst = core::kClientCallBurst;  // a new or idle caller may make this many at once
    std::size_t max_callers = 4096;         // buckets kept at most
    std::function<Clock::time_point()> now = [] { return Clock::now(); };  // tests inject a clock
  };

  CallRateLimiter();  // the limits of core/limits.h
  explicit CallRateLimiter(Options options);
  CallRateLimiter(const CallRateLimiter&) = delete;
  CallRateLimiter& operator=(const CallRateLimiter&) = delete;

  // Takes one token from `caller`'s bucket: OK, or ResourceExhausted naming the caller, the
  // limit and when the next call would be admitted.
  absl::Status Admit(std::string_view caller);

  // Buckets held now (for tests: a flood of names does not grow it past max_callers).
  std::size_t tracked_callers() const;

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated;
  };
  // Tokens `bucket` holds at `now` (refilled since its last update, capped at the burst).
  double TokensAt(const Bucket& bucket, Clock::time_point now) const;
  void SweepRefilledLocked(Clock::time_point now);
  void DropOldestLocked();

  const Options options_;
  const Clock::duration refill_time_;  // an empty bucket is full again after this
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
  Clock::time_point last_sweep_;
};

}  // namespace cohort::server
