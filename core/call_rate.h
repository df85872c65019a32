#pragma once
// What the server and a site agree on about the per-client call rate (core/limits.h states
// the rate itself): how a refusal for it begins, so that a site that reads one slows down
// and asks again instead of giving up; an honest site of a job whose rounds take
// milliseconds is then paced, not dropped.

namespace cohort::core {

// The start of the message of a RESOURCE_EXHAUSTED refusal for the call rate.
inline constexpr char kCallRateRefusal[] = "too many calls from ";
// How long a refused site waits before it asks again.
inline constexpr int kCallRateBackoffMs = 100;

}  // namespace cohort::core
