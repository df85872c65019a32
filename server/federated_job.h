#pragma once
// One federated job on the server, as the gRPC services see it: a thin coordinator over
// the job's parts, each in its own file:
//   participants  server/participant_registry.h  joins, session keys, liveness, enrollment
//   rounds        server/round_driver.h          select, open, wait, close, retry (Run)
//   aggregation   server/aggregation_strategy.h  accepted updates -> next global model
//   records       server/round_recorder.h        audit log, summary, checkpoint, outputs
//   durable state server/job_store.h             OUT/job.db: runtime changes, enrollment
// Transport-agnostic: the services translate calls into these methods and their
// absl::Status results into gRPC statuses.
//
// Threads and locks: Run() drives rounds on its own thread; RPC handler threads call the
// rest concurrently. One mutex guards the job's in-memory state (server/job_core.h), and
// nothing holding it does disk I/O, so Join, PullTask, PushUpdate and Heartbeat only
// ever wait for memory. Admin changes hold a second mutex while they write the audit
// log and the job database, then take the first to apply what they recorded. Model
// bytes are served from immutable snapshots, so a download in progress never sees a
// half-aggregated model.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "audit/writer.h"
#include "core/checkpoint.h"
#include "core/chunking.h"
#include "core/fedavg.h"
#include "core/job_config.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "crypto/key_agreement.h"
#include "server/aggregation_strategy.h"
#include "server/call_rate_limiter.h"
#include "server/job_core.h"
#include "server/job_metrics.h"
#include "server/job_observation.h"
#include "server/job_store.h"
#include "server/job_types.h"
#include "server/ledger_anchors.h"
#include "server/round_recorder.h"
#include "wire/sealing.h"

namespace cohort::server {

struct JobOptions {
  core::JobConfig config;
  core::ParameterSet initial_model;
  std::filesystem::path out_dir;
  Evaluator evaluate;         // optional: server-side test set evaluation after each round
  ModelWriter write_model;    // optional: writes OUT/model.pt at the end
  // Optional: every change to the job (its creation, each parameter set, each published
  // model, participants, start and stop, refused attempts) is appended here, on disk,
  // before it takes effect. Must outlive the job.
  audit::Writer* audit = nullptr;
  Actor launched_by{"server", "server"};  // recorded as the creator of the job
  bool hold = false;                       // wait for Start() before the first round
  // Optional: the server's anchors of its sites' privacy ledgers (server/ledger_anchors.h),
  // checked at every Join and advanced by every recorded DP-SGD spend. Must outlive the job.
  LedgerAnchors* ledger_anchors = nullptr;
  // The key checkpoints are authenticated under (server/checkpoint_key.h). Unset: a random
  // key kept in OUT/checkpoint.key, which only guards against accidents, not against
  // whoever can write OUT; `cohort server` always sets it.
  std::optional<core::CheckpointKey> checkpoint_key;
  // Tests: a failure injected between a round's checkpoint and its record (RoundRecorder).
  std::function<absl::Status(uint64_t round)> after_checkpoint;
  // Optional: each round's summary entry once recorded (RoundRecorder::Options).
  std::function<void(const nlohmann::json& round_entry)> on_round_recorded;
};

// A validated parameter change waiting for the next round boundary.
struct ParameterChange {
  std::string parameter;  // full key, e.g. "training_config.learning_rate"
  nlohmann::json old_value;
  nlohmann::json new_value;
  uint64_t applies_at_round = 0;
  uint64_t audit_seq = 0;  // 0 when the job keeps no audit log
};

// What a client gets when it asks for work.
struct Task {
  enum class Kind { kTrain, kWait, kDone } kind = Kind::kWait;
  uint64_t round = 0;
  uint32_t total_rounds = 0;
  uint64_t model_version = 0;
  std::string training_config_json;
  std::string privacy_config_json;  // the job's "privacy" section
  std::string compression_config_json;  // the job's "federation.compression"; empty: none
  std::shared_ptr<const core::ParameterSet> model;
  std::string message;
  // kDone: why, for the client to act on (kNotJoined: join again); `message` is for people.
  enum class DoneReason { kNone, kFinished, kStopped, kFailed, kNotJoined } done_reason = DoneReason::kNone;
  // kTrain: the client's session (wire/sealing.h); every chunk of `model` is sealed
  // with it for this client alone.
  std::shared_ptr<wire::SealedSession> session;
};

struct JoinResult {
  std::string client_id;
  std::string server_public_key;  // this job run's X25519 public key, for the client's half
};

struct UpdateHeader {
  std::string client_id;
  uint64_t round = 0;
  uint64_t base_model_version = 0;
  core::Manifest manifest;
  uint64_t num_samples = 0;
  uint32_t chunk_count = 0;
  uint32_t chunk_bytes = 0;
  core::TrainMetrics metrics;
  std::optional<SiteSpend> privacy_spend;  // under privacy.mechanism "dp_sgd"
  core::UpdateEncoding encoding;           // must be the job's federation.compression
};

class FederatedJob {
 public:
  // Resumes from OUT/checkpoint.bin when it exists for the same job name, and replays the
  // runtime changes and enrollment recorded in OUT/job.db over `options.config`.
  static absl::StatusOr<std::unique_ptr<FederatedJob>> Create(JobOptions options);
  ~FederatedJob();

  // Drives every round to the end (server/round_driver.h); returns OK when the job
  // finished or was stopped, an error when it failed.
  absl::Status Run();
  void Cancel();

  // --- called by RPC handlers ---
  // `client_public_key`: the X25519 key of the client's new session. Keys are agreed
  // before the client is registered, so one that sends no usable key is refused
  // (InvalidArgument) and never selected. A re-join replaces the session and its keys.
  // `num_samples` is the most any of its updates may claim (and so its FedAvg weight);
  // above federation.max_samples_per_site it is refused.
  // `ledger`: where the site's privacy ledger stands; with ledger anchors, a ledger
  // behind, missing or re-headed is refused (FailedPrecondition, server/ledger_anchors.h).
  absl::StatusOr<JoinResult> Join(const std::string& site, uint64_t num_samples, std::string_view client_public_key,
                                  const LedgerPosition& ledger = {});
  // This client's next task without waiting: TRAIN when it is selected for the open round
  // and has not reported, DONE when the job has ended (or the client is unknown), nullopt
  // when it should wait. Never blocks on anything but the job's in-memory lock.
  std::optional<Task> PollTask(const std::string& client_id);
  // Blocks up to `wait` for this client's next task (PollTask, then waits for a change);
  // kWait when none came.
  Task WaitForTask(const std::string& client_id, std::chrono::milliseconds wait);
  // `listener` is called, outside the job's lock and from any thread, whenever a client
  // waiting for a task might now get one: a round opened, the job ended, a client joined
  // or was revoked. It must be cheap and must not call back into the job while it runs
  // (post work elsewhere instead). Listeners live as long as the job.
  void AddChangeListener(std::function<void()> listener);
  // Checks the header of an upload and opens a receiver that spools it. The receiver
  // opens each sealed chunk with the client's session keys and checks it as it arrives;
  // the spool keeps it sealed. An update claiming more samples than its site declared at
  // Join is refused (InvalidArgument naming both). CommitUpdate hands a complete, valid
  // update to the aggregation strategy.
  absl::StatusOr<core::UpdateReceiver> BeginUpdate(const UpdateHeader& header);
  absl::Status CommitUpdate(const UpdateHeader& header, core::UpdateReceiver receiver);
  // Records that an upload failed mid-stream: the client is out of this round.
  void RejectUpdate(const UpdateHeader& header, const absl::Status& why);
  absl::Status Heartbeat(const std::string& client_id);

  // The site leaves the job for good (it would exceed its privacy budget, say): it is out
  // of the current round and never selected again. When fewer than min_clients sites
  // remain that could train, the job ends early.
  absl::Status Decline(const std::string& client_id, uint64_t round, const std::string& reason);

  // --- called by the admin service (permissions already checked) ---
  absl::Status Start(const Actor& actor);
  // Ends the job at the next round boundary (the running round completes).
  absl::Status Stop(const Actor& actor, const std::string& reason);
  // Validates a change of `parameter` (a full key such as "training_config.learning_rate"
  // or a bare one such as "learning_rate"; the settable ones are core::SettableParameters)
  // to `value`, records it in the audit log and OUT/job.db, and queues it for the next
  // round boundary. An invalid change is refused, recorded as refused, and changes nothing.
  absl::StatusOr<ParameterChange> SetParameter(const Actor& actor, const std::string& parameter,
                                               const nlohmann::json& value, const std::string& reason);
  absl::StatusOr<uint64_t> AddParticipant(const Actor& actor, const std::string& site, const std::string& reason);
  // Takes effect at once: the site's calls are refused from now on and it leaves the round.
  absl::StatusOr<uint64_t> RevokeParticipant(const Actor& actor, const std::string& site, const std::string& reason);
  // OK when `site` may take part in the job (enrolled, or enrollment is open, and not revoked).
  absl::Status CheckParticipant(const std::string& site) const;
  // Records a refused call in the audit log (best effort: a failure is logged, not returned):
  // the first of its kind in full, its repeats counted (RoundRecorder::RecordDenied).
  void RecordDenied(const Actor& actor, const std::string& method, const absl::Status& why);
  // The per-client call rate of the server serving this job (server/call_rate_limiter.h),
  // asked by every call's AuthorizeCaller.
  CallRateLimiter& call_rate() { return call_rate_; }
  nlohmann::json Participants() const;
  const audit::Writer* audit_log() const { return recorder_->audit_log(); }

  // --- observation: the dashboard and /metrics (docs/operability.md) ---
  // A snapshot taken under the job's lock in O(sites); everything else is formatted
  // outside it, so a scraper never slows a round.
  JobSnapshot Observe() const;
  // GET /metrics: the job's metrics in the Prometheus text format.
  std::string MetricsPage();
  // GET /api/state: the snapshot, the summary's rounds and the audit log's last 50 entries,
  // as compact JSON. The rounds' texts are spliced in as the summary keeps them, never
  // parsed: a dashboard polling every 2 s costs O(sites) and a copy, whatever the rounds.
  std::string DashboardState() const;
  JobMetrics& metrics() { return *metrics_; }
  // A site's model download for `round` completed (server/task_stream.h).
  void NoteDownloaded(const std::string& client_id, uint64_t round);

  // The summary comes as its text (JobStatus::summary_json), never as a copy of a tree.
  JobStatus Status() const;
  // Status without the per-client list and the summary: cheap enough for every heartbeat.
  JobStatus BriefStatus() const;
  std::string job_id() const { return core_.config.name; }
  // The parts that never change while the job runs (name, model, data, chunk size,
  // heartbeat timeout) may be read without a lock; settable parts change at round
  // boundaries under the job's mutex.
  const core::JobConfig& config() const { return core_.config; }
  bool finished() const;

 private:
  FederatedJob(JobOptions options, ParticipantRegistry registry, std::unique_ptr<JobStore> store,
               std::unique_ptr<AggregationStrategy> strategy, nlohmann::json summary);
  std::optional<Task> PollTaskLocked(const std::string& client_id);

  JobCore core_;
  const std::filesystem::path out_dir_;
  Evaluator evaluate_;
  ModelWriter write_model_;
  const Actor launched_by_;
  LedgerAnchors* const ledger_anchors_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<AggregationStrategy> strategy_;
  std::unique_ptr<RoundRecorder> recorder_;
  const std::unique_ptr<JobMetrics> metrics_ = std::make_unique<JobMetrics>();
  // Taken by admin changes and the round boundary, never by the network path: they
  // write the audit log and the job database while holding it, in one order.
  std::mutex changes_mu_;
  CallRateLimiter call_rate_;

  // Sealing (wire/sealing.h). One X25519 key pair per job run: a restarted server has a
  // new one, so every client re-joins under new keys. One session per client, replaced
  // at each Join. Updates carry their own copy of the receive key until folded.
  const crypto::X25519KeyPair sealing_keys_ = crypto::GenerateX25519KeyPair();
  // Model streams reuse freed memory (core/chunking.h says why): set process-wide when
  // the job is made, which is before the server starts its threads, so that the arena
  // limit holds for all of them.
  const bool allocator_tuned_ = (core::KeepFreedMemoryForChunkStreams(), true);
};

}  // namespace cohort::server
