#pragma once
// Drives a job's horizontal rounds on the thread that calls Run: at each boundary apply
// the queued parameter changes and decide whether the job ends; wait for enough live
// sites; select the round's clients (reproducibly by seed, round and attempt); open the
// round; wait until it can close (all reported or failed, or its deadline); close it
// (the strategy's next model, the recorder's entries and checkpoint) or retry it; and at
// the end write the outputs and the job's last audit entry. The server's evaluation of a
// round's model runs beside the next round (server/round_evaluation.h).
//
// It holds the job's lock only to read and change memory; the strategy's close, the
// evaluation, the audit appends, the checkpoint and the job database are all written
// with it released.

#include <mutex>

#include "absl/status/status.h"
#include "server/aggregation_strategy.h"
#include "server/job_core.h"
#include "server/job_metrics.h"
#include "server/job_store.h"
#include "server/round_evaluation.h"
#include "server/round_recorder.h"

namespace cohort::server {

class RoundDriver {
 public:
  struct Parts {
    JobCore* core = nullptr;
    AggregationStrategy* strategy = nullptr;
    RoundRecorder* recorder = nullptr;
    JobStore* store = nullptr;
    std::mutex* changes_mu = nullptr;  // serialises admin changes with the round boundary
    Evaluator evaluate;                // optional
    ModelWriter write_model;           // optional
    JobMetrics* metrics = nullptr;     // optional: round and phase metrics
  };
  explicit RoundDriver(Parts parts)
      : p_(std::move(parts)), evaluation_(p_.evaluate, [this](const RoundEvaluation::Result& r) { Evaluated(r); }) {}

  // Returns OK when the job finished or was stopped, the failure otherwise; Cancelled
  // when the job was cancelled (no outputs are written then).
  absl::Status Run();

 private:
  // The round boundary: queued changes take effect; returns what changed, for the summary.
  nlohmann::json ApplyPendingChanges();
  // Marks silent sites lost (and out of the open round) and notes it in the audit log.
  void MarkLostLocked(core::Clock::time_point now);
  // `phases`: the waiting, training and upload phases, measured by Run; CloseRound times
  // the rest.
  absl::Status CloseRound(uint64_t round, int attempts, core::Clock::time_point started, nlohmann::json changes,
                          RoundPhaseSeconds phases);
  // Writes the outputs and the job.end entry, then ends the job in `state`.
  absl::Status End(JobState state, std::string why);
  // Records a round's test metrics in its entry (on the evaluating thread).
  void Evaluated(const RoundEvaluation::Result& result);
  // Waits for the evaluation in progress (its metrics are then on record); its error when
  // it failed (the job fails with it).
  absl::Status LandEvaluation();

  Parts p_;
  RoundEvaluation evaluation_;
};

}  // namespace cohort::server
