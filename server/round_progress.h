#pragma once
// Where a job's current round stands: its phase, and each selected site's step in it. The
// dashboard shows it (/api/state, server/job_observation.h) and the round's record takes
// its phase durations from the times kept here (summary.json "phase_seconds",
// docs/operability.md defines each phase).
//
// Part of the job's in-memory state (server/job_core.h): guarded by the job's lock. No I/O.

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "core/round_tracker.h"

namespace cohort::server {

struct RoundProgress {
  // waiting: for enough live sites (or between attempts); training: the round is open;
  // closing: the strategy folds the last updates into the next model; evaluating: the
  // server's test; checkpointing: the summary entry, the checkpoint and the round's audit
  // entries; done: the job has ended.
  enum class Phase { kWaiting, kTraining, kClosing, kCheckpointing, kDone };

  Phase phase = Phase::kWaiting;
  // The job's clock: seconds it has run, across restarts (the time a server was down is
  // not counted). Set when Run begins: `elapsed_before` is the last recorded round's.
  core::Clock::time_point run_started{};
  double elapsed_before = 0;
  double ElapsedSeconds(core::Clock::time_point now) const {
    if (run_started == core::Clock::time_point{}) return elapsed_before;
    return elapsed_before + std::chrono::duration<double>(now - run_started).count();
  }

  uint64_t round = 0;  // the round being waited for, run or closed; 0 before the first
  int attempt = 0;     // 0 for a round's first attempt, 1 for its first retry
  core::Clock::time_point boundary{};  // the round's boundary: its first attempt began waiting
  core::Clock::time_point opened{};    // the current attempt opened
  std::optional<core::Clock::time_point> first_upload;  // the attempt's first accepted update header
  std::set<std::string> downloaded;  // sites whose model download completed in this attempt
  std::set<std::string> uploading;   // sites whose update header was accepted in this attempt

  // A new attempt of `round` opened at `now`.
  void Open(uint64_t round_number, int attempt_number, core::Clock::time_point now) {
    round = round_number;
    attempt = attempt_number;
    phase = Phase::kTraining;
    opened = now;
    first_upload.reset();
    downloaded.clear();
    uploading.clear();
  }
  void UploadBegan(const std::string& site, core::Clock::time_point now) {
    uploading.insert(site);
    if (!first_upload) first_upload = now;
  }
};

// "waiting", "training", "closing", "evaluating", "checkpointing", "done".
inline std::string_view RoundPhaseName(RoundProgress::Phase phase) {
  switch (phase) {
    case RoundProgress::Phase::kWaiting: return "waiting";
    case RoundProgress::Phase::kTraining: return "training";
    case RoundProgress::Phase::kClosing: return "closing";
    case RoundProgress::Phase::kCheckpointing: return "checkpointing";
    case RoundProgress::Phase::kDone: return "done";
  }
  return "waiting";
}

// The durations of a closed round's phases, in seconds, for its summary entry and the
// cohort_round_phase_seconds histogram (docs/operability.md).
struct RoundPhaseSeconds {
  double waiting = 0;     // boundary -> the final attempt opened (waiting for sites, earlier attempts)
  double training = 0;    // opened -> first accepted update header (or the close, if none came)
  double upload = 0;      // first accepted update header -> the decision to close
  double fold = 0;        // decision to close -> the strategy's next model (the folds still queued)
  double evaluation = 0;  // the server's test of the new model (beside the next round's training)
  double checkpoint = 0;  // summary entry, checkpoint, model.publish and spends on record
};

}  // namespace cohort::server
