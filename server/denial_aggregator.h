#pragma once
// Refused calls on the audit log without letting a caller flood it. Each refusal is keyed
// by (identity, role, method, status code): the first of a key in a window is written in
// full (access.denied) before its caller hears of it; the repeats within the window are
// counted in memory and written as one access.denied.repeated entry (count, window, first
// and last time, last reason) when the window has ended (FlushExpired, which the owner
// calls periodically), when the next refusal of the key opens a new window, or at
// FlushAll (the job's end, shutdown). So a caller refused N times in a window costs two
// entries, and no refusal goes unrecorded. Rate-limited calls (RESOURCE_EXHAUSTED) are
// refusals like any other.
//
// Memory stays bounded: at most `max_keys` keys are held; a new key past that flushes and
// drops the key whose window opened first.
//
// Thread-safe. The sink is called without the aggregator's lock (it writes to disk), so a
// refusal that is only counted never waits for a disk.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/job_types.h"

namespace cohort::server {

// One key's repeated refusals in one window, as written in access.denied.repeated.
struct RepeatedDenials {
  Actor actor;
  std::string method;
  absl::StatusCode code = absl::StatusCode::kUnknown;  // the reason class
  uint64_t count = 0;                                  // refusals after the one written in full
  absl::Time window_start;                             // when the full entry was written
  absl::Duration window;
  absl::Time first;  // the first and last counted refusal
  absl::Time last;
  std::string last_reason;
};

class DenialAggregator {
 public:
  struct Options {
    absl::Duration window = absl::Seconds(60);
    std::size_t max_keys = 1024;
    std::function<absl::Time()> now = [] { return absl::Now(); };  // tests inject a clock
  };
  struct Sink {
    // Writes one refusal in full; the refused caller is answered after it returns.
    std::function<void(const Actor& actor, const std::string& method, const absl::Status& why)> full;
    std::function<void(const RepeatedDenials& repeated)> repeated;
  };

  DenialAggregator(Options options, Sink sink);
  ~DenialAggregator();  // FlushAll
  DenialAggregator(const DenialAggregator&) = delete;
  DenialAggregator& operator=(const DenialAggregator&) = delete;

  // One refused call. Writes it in full when it opens a window for its key; otherwise only
  // counts it.
  void Record(const Actor& actor, const std::string& method, const absl::Status& why);
  // Writes the counts of every window that has ended and forgets those keys.
  void FlushExpired();
  // Writes every count now and forgets every key.
  void FlushAll();

  std::size_t tracked_keys() const;

 private:
  using Key = std::tuple<std::string, std::string, std::string, absl::StatusCode>;  // identity, role, method, code
  struct Window {
    absl::Time start{};
    uint64_t count = 0;
    absl::Time first{};
    absl::Time last{};
    std::string last_reason{};
  };
  static RepeatedDenials Summarize(const Key& key, const Window& window, absl::Duration length);
  void WriteAll(const std::vector<RepeatedDenials>& summaries) const;
  // Moves the keys `done` selects out of the map, with their counts (when any) into `out`.
  template <typename Done>
  void TakeLocked(Done done, std::vector<RepeatedDenials>& out);

  const Options options_;
  const Sink sink_;
  mutable std::mutex mu_;
  std::map<Key, Window> windows_;
};

}  // namespace cohort::server
