#include "server/call_rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/call_rate.h"
#include "core/quote.h"

namespace cohort::server {

CallRateLimiter::CallRateLimiter() : CallRateLimiter(Options{}) {}

CallRateLimiter::CallRateLimiter(Options options)
    : options_(std::move(options)),
      refill_time_(std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(options_.burst / options_.calls_per_second))),
      last_sweep_(options_.now()) {}

double CallRateLimiter::TokensAt(const Bucket& bucket, Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
  return std::min(options_.burst, bucket.tokens + std::max(0.0, elapsed) * options_.calls_per_second);
}

void CallRateLimiter::SweepRefilledLocked(Clock::time_point now) {
  last_sweep_ = now;
  std::erase_if(buckets_, [&](const auto& entry) { return TokensAt(entry.second, now) >= options_.burst; });
}

void CallRateLimiter::DropOldestLocked() {
  auto oldest = std::min_element(buckets_.begin(), buckets_.end(), [](const auto& a, const auto& b) {
    return a.second.updated < b.second.updated;
  });
  if (oldest != buckets_.end()) buckets_.erase(oldest);
}

absl::Status CallRateLimiter::Admit(std::string_view caller) {
  const Clock::time_point now = options_.now();
  double wait_seconds = 0;
  {
    std::lock_guard lock(mu_);
    if (now - last_sweep_ >= refill_time_) SweepRefilledLocked(now);
    auto it = buckets_.find(std::string(caller));
    if (it == buckets_.end()) {
      if (buckets_.size() >= options_.max_callers) SweepRefilledLocked(now);
      if (buckets_.size() >= options_.max_callers) DropOldestLocked();
      it = buckets_.emplace(std::string(caller), Bucket{options_.burst, now}).first;
    }
    Bucket& bucket = it->second;
    bucket.tokens = TokensAt(bucket, now);
    bucket.updated = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return absl::OkStatus();
    }
    wait_seconds = (1 - bucket.tokens) / options_.calls_per_second;
  }
  const auto wait_ms = static_cast<int64_t>(std::ceil(wait_seconds * 1000));
  return absl::ResourceExhaustedError(absl::StrCat(
      core::kCallRateRefusal, core::QuotePrefix(caller), ": a client certificate may make at most ",
      options_.calls_per_second, " calls per second, in bursts of at most ", options_.burst,
      " (core::kClientCallsPerSecond, core::kClientCallBurst); retry in ", wait_ms, " ms and space calls further apart"));
}

std::size_t CallRateLimiter::tracked_callers() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace cohort::server
