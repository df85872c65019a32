#pragma once
// What a job leaves on record: the audit log entries of its decisions and observations,
// each round's summary entry and checkpoint, the DP-SGD spends mirrored from the sites,
// and the outputs at the end. Every method that writes does disk I/O and is called
// without the job's lock; the summary (server/job_summary.h, each round kept as its
// text) has a lock of its own.
//
// Two ways into the audit log: Record appends before the caller acts (a change whose
// entry cannot be written is not made); Note queues an observation made on the network
// path (a site joined, a site was lost), which a thread of the recorder appends, so that
// no Join or Heartbeat ever waits for a disk. Refused calls go through RecordDenied, which
// writes the first of a kind in full and counts its repeats (server/denial_aggregator.h).

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "audit/writer.h"
#include "core/checkpoint.h"
#include "core/job_config.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "core/round_tracker.h"
#include "privacy/ledger.h"
#include "server/denial_aggregator.h"
#include "server/job_summary.h"
#include "server/job_types.h"
#include "server/ledger_anchors.h"

namespace cohort::server {

// One site's accepted update, as the round's summary shows it.
struct SiteReport {
  uint64_t samples = 0;
  core::TrainMetrics metrics;
  double update_norm = 0;
  std::optional<SiteSpend> spend;
};

class RoundRecorder {
 public:
  struct Options {
    std::string job;
    std::filesystem::path out_dir;
    audit::Writer* audit = nullptr;  // optional; must outlive the recorder
    Actor server{"server", "server"};  // the actor of the server's own decisions
    core::PrivacyConfig privacy;       // the budget of the DP-SGD mirror ledgers
    // Optional: advanced to each site's ledger position once its spend is on record.
    LedgerAnchors* ledger_anchors = nullptr;
    core::CheckpointKey checkpoint_key;  // what checkpoints are authenticated under
    // Tests: runs between a round's checkpoint and its record; an error stops the round
    // there, as a crash at that moment would.
    std::function<absl::Status(uint64_t round)> after_checkpoint;
    // Optional: handed each round's summary entry once its record is complete (the
    // TensorBoard event file, server/tensorboard_writer.h). Runs on the closing thread,
    // without the job's lock; it must not fail the round, so it reports nothing back.
    std::function<void(const nlohmann::json& round_entry)> on_round_recorded;
  };
  // `summary`: what a resumed job recorded so far (its checkpoint's), or null for a new job.
  RoundRecorder(Options options, nlohmann::json summary);
  ~RoundRecorder();  // appends what is still queued
  RoundRecorder(const RoundRecorder&) = delete;
  RoundRecorder& operator=(const RoundRecorder&) = delete;

  // Appends now; the entry's seq (0 without a log). Unavailable, naming the log, when it
  // cannot be written: the caller must then not make the change.
  absl::StatusOr<uint64_t> Record(const Actor& actor, const std::string& action, const std::string& parameter,
                                  const std::string& participant, nlohmann::json old_value, nlohmann::json new_value,
                                  const std::string& reason);
  // Queues an observation; returns at once. A failure to append it is logged.
  void Note(const Actor& actor, const std::string& action, const std::string& participant, nlohmann::json old_value,
            nlohmann::json new_value, const std::string& reason);
  // A refused call (access.denied): the first of its (actor, method, code) in a window is
  // appended now, its repeats are counted and appended as one access.denied.repeated
  // entry when the window ends (the note thread checks every second) or at FlushNotes.
  void RecordDenied(const Actor& actor, const std::string& method, const absl::Status& why);
  // Waits until every queued observation is appended, the counts of repeated refusals too.
  void FlushNotes();

  struct ClosedRound {
    uint64_t round = 0;
    int attempts = 1;
    uint64_t model_version = 0;  // of the new model
    core::Clock::time_point started;
    int64_t total_rounds = 0;
    std::map<std::string, SiteReport> reports;
    nlohmann::json strategy_report = nlohmann::json::object();  // AggregationStrategy's
    nlohmann::json strategy_state;                              // for the checkpoint
    core::TrainingConfig training;
    nlohmann::json parameter_changes = nlohmann::json::array();
    // The job's clock at the close (server/round_progress.h) and the round's phase
    // durations so far, in seconds ("waiting", "training", "upload", "fold", "evaluation";
    // docs/operability.md defines them); both go into the summary entry when set.
    std::optional<double> elapsed_seconds;
    nlohmann::json phase_seconds;
    // The server's test of this round's model runs while the next round trains
    // (server/round_evaluation.h), and its metrics come through RecordTest; the entry is
    // handed to on_round_recorded then, complete. False: the job has no test set.
    bool test_pending = false;
  };
  // A closed round's record, in this order: the summary entry and the checkpoint (which
  // names the record to come), then model.publish (and the job's privacy.spend), the
  // sites' DP-SGD spends mirrored and anchored; all before any client can download the
  // model. Returns the model's SHA-256 (empty without an audit log).
  absl::StatusOr<std::string> RecordRound(const ClosedRound& round, const core::ParameterSet& model);

  // The server's test-set metrics of round `round`'s model (evaluated while the next round
  // trained) join that round's summary entry, with the evaluation's duration in its
  // "phase_seconds"; the entry then goes to on_round_recorded. The next checkpoint holds
  // them; a crash before it loses only these metrics, which the resumed job computes again.
  void RecordTest(uint64_t round, const core::EvalMetrics& test, double seconds);

  // After a resume: writes what the checkpoint's last round is missing from its record
  // (model.publish, privacy.spend entries, mirrored spends), each found by round and
  // version, so a crash between the checkpoint and the record leaves it complete and
  // written once.
  absl::Status CompleteResumedRound();

  // The job's end: summary.json's status (and why), model.json, model.pt, summary.json;
  // then, after every queued observation, one job.end entry that closes the log.
  absl::Status Finish(JobState state, const std::string& why, const core::ParameterSet& model,
                      const nlohmann::json& model_config, const nlohmann::json& effective_config,
                      const ModelWriter& write_model);
  // Adds a top-level member to the summary ("ended_early").
  void SetSummaryField(const std::string& key, nlohmann::json value);
  // Adds a phase's duration to the last round's "phase_seconds" (the checkpoint's own,
  // known only once the checkpoint that holds the entry is written).
  void SetLastRoundPhaseSeconds(const std::string& phase, double seconds);
  // The summary as a tree, parsed: for the job's start and end.
  nlohmann::json summary() const;
  // Each round's entry as compact JSON, in order, shared with the summary (no copy of the
  // texts, no parse): for the dashboard's every poll.
  std::vector<std::shared_ptr<const std::string>> round_texts() const;
  // The summary as compact JSON (summary().dump()), joined from the rounds' texts
  // (server/job_summary.h) outside the summary's lock: what status calls carry.
  std::string summary_json() const;
  const audit::Writer* audit_log() const { return options_.audit; }

  // The checkpoint's summary member that carries the strategy's state; Create strips it.
  static constexpr const char* kStrategyStateKey = "strategy_state";

 private:
  struct Noted {
    Actor actor;
    std::string action, participant;
    nlohmann::json old_value, new_value;
    std::string reason;
  };
  void NoteLoop();
  // The denial aggregator's sink: the entries it decides on.
  void WriteDenied(const Actor& actor, const std::string& method, const absl::Status& why);
  void WriteRepeatedDenials(const RepeatedDenials& repeated);
  // What of a round's record is already in the audit log.
  struct RecordedRound {
    bool published = false;
    bool server_spend = false;
    std::set<std::string> site_spends;
  };
  // The round's record for the checkpoint's summary `entry`, skipping what `already` holds.
  // Mirrored spends are set in `entry` as in the summary.
  absl::Status WriteRoundRecord(nlohmann::json& entry, const RecordedRound& already);
  static nlohmann::json SpendJson(const SiteSpend& spend);
  static void SetTestMetrics(nlohmann::json& entry, const core::EvalMetrics& test);
  // Mirrors a site's spend (SpendJson's `report`) once per round; returns the report with
  // the mirror's job_epsilon (or mirror_error).
  nlohmann::json MirrorSpend(const std::string& site, uint64_t round, nlohmann::json report);

  const Options options_;
  mutable std::mutex summary_mu_;
  JobSummary summary_;
  std::map<std::string, std::unique_ptr<privacy::Ledger>> mirrors_;  // only the closing thread

  std::mutex notes_mu_;
  std::condition_variable notes_cv_;
  std::deque<Noted> notes_;
  bool writing_note_ = false;
  bool quit_ = false;
  DenialAggregator denials_;
  std::thread note_writer_;  // last: starts once everything above exists
};

}  // namespace cohort::server
