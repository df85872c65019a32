// The per-client call rate (server/call_rate_limiter.h) on an injected clock: a burst is
// admitted and the call past it refused with when to retry, tokens come back at the rate,
// callers do not share a bucket, and a flood of names does not grow its memory.
#include "server/call_rate_limiter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace cohort::server {
namespace {

using ::testing::HasSubstr;
using Clock = CallRateLimiter::Clock;

struct FakeClock {
  Clock::time_point now = Clock::time_point() + std::chrono::hours(1);
  void Advance(Clock::duration d) { now += d; }
};

CallRateLimiter::Options On(FakeClock& clock, double rate = 20, double burst = 40, size_t max_callers = 4096) {
  CallRateLimiter::Options options;
  options.calls_per_second = rate;
  options.burst = burst;
  options.max_callers = max_callers;
  options.now = [&clock] { return clock.now; };
  return options;
}

TEST(CallRateLimiterTest, TheDefaultsAreTheLimitsOfCoreLimits) {
  const CallRateLimiter::Options options;
  EXPECT_EQ(options.calls_per_second, core::kClientCallsPerSecond);
  EXPECT_EQ(options.burst, core::kClientCallBurst);
}

TEST(CallRateLimiterTest, ABurstIsAdmittedAndTheCallPastItIsRefusedWithWhenToRetry) {
  FakeClock clock;
  CallRateLimiter limiter(On(clock));
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(limiter.Admit("hospital-a").ok()) << "call " << i;
  const absl::Status refused = limiter.Admit("hospital-a");
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("hospital-a"));
  EXPECT_THAT(refused.message(), HasSubstr("at most 20 calls per second"));
  EXPECT_THAT(refused.message(), HasSubstr("bursts of at most 40"));
  EXPECT_THAT(refused.message(), HasSubstr("retry in 50 ms"));
}

TEST(CallRateLimiterTest, CallsComeBackAtTheRateAndNoFaster) {
  FakeClock clock;
  CallRateLimiter limiter(On(clock));
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(limiter.Admit("s").ok());
  // One second of 20 calls per second spaced 50 ms apart is sustained indefinitely.
  for (int i = 0; i < 200; ++i) {
    clock.Advance(std::chrono::milliseconds(50));
    ASSERT_TRUE(limiter.Admit("s").ok()) << "call " << i;
  }
  EXPECT_FALSE(limiter.Admit("s").ok());  // no token saved up while calling at the rate
  clock.Advance(std::chrono::milliseconds(40));
  EXPECT_FALSE(limiter.Admit("s").ok());
  // A refused call costs nothing: the token that was refilling still arrives on time.
  clock.Advance(std::chrono::milliseconds(11));
  EXPECT_TRUE(limiter.Admit("s").ok());
}

TEST(CallRateLimiterTest, OneCallerSpendingItsRateDoesNotSpendAnother) {
  FakeClock clock;
  CallRateLimiter limiter(On(clock));
  for (int i = 0; i < 1000; ++i) (void)limiter.Admit("flooder");
  EXPECT_FALSE(limiter.Admit("flooder").ok());
  for (int i = 0; i < 40; ++i) EXPECT_TRUE(limiter.Admit("honest").ok());
}

TEST(CallRateLimiterTest, AHeartbeatEvery100MsAndALongPollNeverComeNearTheLimit) {
  // The busiest legitimate site: heartbeats every 100 ms (the shortest interval the server
  // hands out) and a PullTask whenever the last one came back, say every 100 ms too.
  FakeClock clock;
  CallRateLimiter limiter(On(clock));
  for (int i = 0; i < 10000; ++i) {
    clock.Advance(std::chrono::milliseconds(100));
    ASSERT_TRUE(limiter.Admit("site").ok());
    ASSERT_TRUE(limiter.Admit("site").ok());
  }
}

TEST(CallRateLimiterTest, AFloodOfNamesDoesNotGrowMemoryPastTheBound) {
  FakeClock clock;
  CallRateLimiter limiter(On(clock, 20, 40, /*max_callers=*/100));
  for (int i = 0; i < 10000; ++i) {
    (void)limiter.Admit("name-" + std::to_string(i));
    ASSERT_LE(limiter.tracked_callers(), 100u);
  }
  // The newest name was kept: its bucket is spent.
  for (int i = 0; i < 39; ++i) ASSERT_TRUE(limiter.Admit("name-9999").ok());
  EXPECT_FALSE(limiter.Admit("name-9999").ok());
}

TEST(CallRateLimiterTest, IdleCallersAreForgottenOnceTheirBucketHasRefilled) {
  FakeClock clock;
  CallRateLimiter limiter(On(clock));
  for (int i = 0; i < 50; ++i) (void)limiter.Admit("gone-" + std::to_string(i));
  EXPECT_EQ(limiter.tracked_callers(), 50u);
  clock.Advance(std::chrono::seconds(3));  // past burst / rate = 2 s: every bucket is full again
  EXPECT_TRUE(limiter.Admit("new").ok());
  EXPECT_EQ(limiter.tracked_callers(), 1u);
}

}  // namespace
}  // namespace cohort::server
