#pragma once
// One federated job on the server: the registry of clients, the round loop, and the
// acceptance of updates. Transport-agnostic: the gRPC service translates calls into these
// methods and their absl::Status results into gRPC statuses.
//
// Threads: Run() drives rounds on its own thread; RPC handler threads call Join,
// WaitForTask, BeginUpdate/CommitUpdate, Heartbeat and Status concurrently. One mutex
// guards the job's state; model bytes are served from immutable snapshots so a download
// in progress never sees a half-aggregated model.

#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "audit/writer.h"
#include "core/chunking.h"
#include "core/fedavg.h"
#include "core/job_config.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "core/round_tracker.h"
#include "privacy/ledger.h"
#include "server/job_privacy.h"
#include "crypto/key_agreement.h"
#include "proto/sealing.h"

namespace cohort::server {

using Evaluator = std::function<absl::StatusOr<core::EvalMetrics>(const core::ParameterSet&)>;
using ModelWriter = std::function<absl::Status(const core::ParameterSet&, const std::filesystem::path&)>;

// Who asked for something: the identity and role from the caller's verified certificate
// ("alice", "admin"), or the claimed name with role "unauthenticated" in --insecure mode.
struct Actor {
  std::string identity;
  std::string role;
};

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
  std::shared_ptr<const core::ParameterSet> model;
  std::string message;
  // kTrain: the client's session (proto/sealing.h); every chunk of `model` is sealed
  // with it for this client alone.
  std::shared_ptr<wire::SealedSession> session;
};

struct JoinResult {
  std::string client_id;
  std::string server_public_key;  // this job run's X25519 public key, for the client's half
};

// A site's DP-SGD spend for the round its update belongs to, as its ledger recorded it.
struct SiteSpend {
  double sampling_rate = 0;
  double noise_multiplier = 0;
  int64_t steps = 0;
  double clip_norm = 0;
  double epsilon_after = 0;
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
};

class FederatedJob {
 public:
  // Resumes from OUT/checkpoint.bin when it exists for the same job name.
  static absl::StatusOr<std::unique_ptr<FederatedJob>> Create(JobOptions options);

  // Drives every round to the end; returns OK when the job finished, an error when it
  // failed (a round could not reach its minimum after the configured retries).
  absl::Status Run();
  void Cancel();

  // --- called by RPC handlers ---
  // `client_public_key`: the X25519 key of the client's new session. Keys are agreed
  // before the client is registered, so one that sends no usable key is refused
  // (InvalidArgument) and never selected. A re-join replaces the session and its keys.
  absl::StatusOr<JoinResult> Join(const std::string& site, uint64_t num_samples, std::string_view client_public_key);
  // Blocks up to `wait` for this client's next task.
  Task WaitForTask(const std::string& client_id, std::chrono::milliseconds wait);
  // Checks the header of an upload and opens a receiver that spools it. The receiver
  // opens each sealed chunk with the client's session keys and checks it as it arrives;
  // the spool keeps it sealed. CommitUpdate adds a complete, valid update.
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
  // or a bare one such as "learning_rate") to `value`, records it, and queues it for the
  // next round boundary. An invalid change is refused, recorded as refused, and changes
  // nothing.
  absl::StatusOr<ParameterChange> SetParameter(const Actor& actor, const std::string& parameter,
                                               const nlohmann::json& value, const std::string& reason);
  absl::StatusOr<uint64_t> AddParticipant(const Actor& actor, const std::string& site, const std::string& reason);
  // Takes effect at once: the site's calls are refused from now on and it leaves the round.
  absl::StatusOr<uint64_t> RevokeParticipant(const Actor& actor, const std::string& site, const std::string& reason);
  // OK when `site` may take part in the job (enrolled, or enrollment is open, and not revoked).
  absl::Status CheckParticipant(const std::string& site) const;
  // Records a refused call in the audit log (best effort: a failure is logged, not returned).
  void RecordDenied(const Actor& actor, const std::string& method, const std::string& reason);
  nlohmann::json Participants() const;
  const audit::Writer* audit_log() const { return audit_; }

  nlohmann::json Status() const;
  std::string job_id() const { return config_.name; }
  // The parts that never change while the job runs (name, model, data, chunk size,
  // heartbeat timeout) may be read without a lock; settable parts change at round
  // boundaries under the job's mutex.
  const core::JobConfig& config() const { return config_; }
  bool finished() const;

 private:
  explicit FederatedJob(JobOptions options);

  struct Client {
    uint64_t num_samples = 0;
    core::Clock::time_point last_seen;
    bool lost = false;
    bool declined = false;  // left the job (Decline): never selected again
    uint64_t last_task_round = 0;
  };
  struct Report {
    uint64_t samples = 0;
    core::TrainMetrics metrics;
    double update_norm = 0;
    std::optional<SiteSpend> spend;
  };
  // Mirrors a site's declared DP-SGD spend in the server's own ledger for that site
  // (OUT/ledgers/SITE.ledger) and the audit log; returns what summary.json shows.
  nlohmann::json MirrorSpendLocked(const std::string& site, uint64_t round, const SiteSpend& spend);

  std::vector<std::string> AliveClientsLocked(core::Clock::time_point now) const;
  void MarkLostClientsLocked(core::Clock::time_point now);
  absl::Status CloseRound(uint64_t round, int attempts, core::Clock::time_point started);
  absl::Status WriteOutputs();
  // Appends to the audit log when there is one; returns the entry's seq (0 without a log).
  absl::StatusOr<uint64_t> RecordLocked(const Actor& actor, const std::string& action, const std::string& parameter,
                                        const std::string& participant, nlohmann::json old_value,
                                        nlohmann::json new_value, const std::string& reason);
  // Applies queued parameter changes (round boundary); returns what changed for the summary.
  nlohmann::json ApplyPendingChangesLocked();
  // The configuration as it will be at the next round boundary: queued changes applied.
  nlohmann::json ConfigAtNextBoundaryLocked() const;
  absl::Status PersistEffectiveConfigLocked();

  core::JobConfig config_;
  std::filesystem::path out_dir_;
  Evaluator evaluate_;
  ModelWriter write_model_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string state_ = "waiting";  // waiting | running | finished | failed
  std::string failure_;
  bool cancelled_ = false;
  std::shared_ptr<const core::ParameterSet> global_;
  uint64_t model_version_ = 0;
  uint64_t completed_rounds_ = 0;
  core::RoundTracker tracker_;
  core::StreamingFedAvg aggregate_;
  std::map<std::string, Client> clients_;
  std::map<std::string, Report> reports_;
  nlohmann::json summary_;

  // Administration and audit.
  audit::Writer* audit_ = nullptr;
  Actor launched_by_;
  bool held_ = false;
  bool stop_requested_ = false;
  bool budget_spent_ = false;  // the job ends because its privacy budget is spent
  struct PendingChange {
    std::string parameter;
    nlohmann::json old_value, new_value;
    Actor actor;
  };
  std::vector<PendingChange> pending_changes_;
  nlohmann::json round_changes_ = nlohmann::json::array();
  std::map<std::string, std::string> declines_;  // site -> why it left the job
  std::unique_ptr<JobPrivacy> privacy_;          // client-level DP; null otherwise
  std::map<std::string, std::unique_ptr<privacy::Ledger>> mirrors_;  // DP-SGD: per-site mirror ledgers  // applied at the closing round's start

  // Sealing (proto/sealing.h). One X25519 key pair per job run: a restarted server has a
  // new one, so every client re-joins under new keys. One session per client, replaced
  // at each Join; a replaced session's keys are wiped once the last download using it
  // ends. Updates carry their own copy of the receive key until folded.
  const crypto::X25519KeyPair sealing_keys_ = crypto::GenerateX25519KeyPair();
  // Model streams reuse freed memory (core/chunking.h says why): set process-wide when
  // the job is made, which is before the server starts its threads, so that the arena
  // limit holds for all of them.
  const bool allocator_tuned_ = (core::KeepFreedMemoryForChunkStreams(), true);
  std::map<std::string, std::shared_ptr<wire::SealedSession>> sessions_;
};

}  // namespace cohort::server
