#pragma once
// The driver of a vertical job (docs/vertical.md): the second kind of job beside
// FederatedJob. It checks each party's hello against the job, starts the parties once all
// have said hello, routes sealed relays from party to party (stamping the sender from the
// stream's certificate, never from the message), records the parties' reports (sizes and
// metrics only) in the audit log and summary.json, pauses the job when a party's stream
// breaks, resumes it when the same process returns, and aborts or finishes it.
//
// The server never opens a relay: it sees its recipient, topic, sequence and size.
//
// Transport. Each party's stream is a PartyLink (server/vertical_service.h implements it
// over a gRPC bidi reactor). The job keeps one bounded outbound queue per party and
// writes one message at a time to its link; a relay that fills its recipient's queue
// past the bound holds the sender's reads until the queue drains (flow control without a
// thread per stream). A party that is gone keeps its queue, delivered when it returns.
//
// Locking. One mutex guards the job's memory; nothing under it touches the disk (audit
// entries are queued observations, summary.json is written by Run's thread). The job
// calls PartyLink methods under its mutex, so a link must never call back into the job
// from inside one of them.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "audit/writer.h"
#include "core/job_config.h"
#include "proto/cohort.pb.h"
#include "server/job_types.h"
#include "server/round_recorder.h"

namespace cohort::server {

// One party's open stream, as the job writes to it. Implementations are thread-safe and
// never call into the job from these methods.
class PartyLink {
 public:
  virtual ~PartyLink() = default;
  // Starts writing `message`; the job starts no other Write on this link until the link
  // reports this one done (VerticalJob::WriteDone).
  virtual void Write(std::shared_ptr<const v1::VerticalMessage> message) = 0;
  // Reads the party's next message (after a relay was held for flow control).
  virtual void ResumeReading() = 0;
  // Ends the stream with `status` once the write in flight (if any) is done.
  virtual void End(const grpc::Status& status) = 0;
};

struct VerticalJobOptions {
  core::JobConfig config;  // job_type "vertical"
  std::filesystem::path out_dir;
  audit::Writer* audit = nullptr;  // optional; must outlive the job
  Actor launched_by{"local", "unauthenticated"};
  // Bound of each party's outbound queue: past it, senders to that party wait.
  size_t max_queued_bytes = size_t{64} << 20;
  // How long Run keeps delivering the last FINISH or ABORT before it returns.
  std::chrono::milliseconds drain_timeout{3000};
};

class VerticalJob {
 public:
  // InvalidArgument for a config that is not a vertical job, or that names a revoked site
  // as a party. Records job.create.
  static absl::StatusOr<std::unique_ptr<VerticalJob>> Create(VerticalJobOptions options);
  ~VerticalJob();
  VerticalJob(const VerticalJob&) = delete;
  VerticalJob& operator=(const VerticalJob&) = delete;

  // A stream's first message, from the party whose certificate names `identity`. Not OK:
  // the refusal, which the caller sends as an ABORT and ends the stream with. PermissionDenied (the job goes on, so that no outsider can end it): a
  // name that is not a party of the job, a hello claiming another name. FailedPrecondition:
  // the job has ended. InvalidArgument (the hello does not fit the job) and
  // FailedPrecondition (a party that restarted mid-job, with a new key): the job fails
  // with the same message, sent as ABORT to every party. A new stream of a party that has
  // one replaces it (before the start, or with the same key: the same process).
  // `connection` names the stream in the calls that follow (from NewConnectionId).
  absl::Status Hello(const std::string& identity, const v1::PartyHello& hello, uint64_t connection,
                     std::shared_ptr<PartyLink> link);
  // A fresh id for a stream, never 0 and never reused.
  uint64_t NewConnectionId() { return next_connection_.fetch_add(1); }
  // Puts a refused stream on the audit log (access.denied) before its caller hears of it;
  // repeats of the same refusal are counted into one entry (RoundRecorder::RecordDenied).
  void RecordDenied(const Actor& actor, const std::string& method, const absl::Status& why);

  struct RelayResult {
    absl::Status status;        // not OK: the sender's stream ends with it
    bool hold_reading = false;  // the recipient's queue is full: ResumeReading comes later
  };
  RelayResult Relay(uint64_t connection, v1::Relay relay);
  // Not OK: the stream ends with it.
  absl::Status Report(uint64_t connection, const v1::PartyReport& report);
  // The link's write finished (ok: the transport took it).
  void WriteDone(uint64_t connection, bool ok);
  // The stream ended (broken, cancelled or closed by the party).
  void Disconnected(uint64_t connection);

  // Waits for every party, runs the job to its end (all parties FINISHED, an abort, or
  // Cancel), then writes summary.json and job.end. OK when the job finished.
  absl::Status Run();
  // Ends the job as failed with `why` (server shutdown); returns at once.
  void Cancel(const std::string& why = "the server was stopped");

  const std::string& job_id() const { return options_.config.name; }
  const core::JobConfig& config() const { return options_.config; }
  RoundRecorder& recorder() { return *recorder_; }
  nlohmann::json Summary() const;

 private:
  struct Party {
    std::string name;
    uint64_t connection = 0;  // 0: no live stream
    std::shared_ptr<PartyLink> link;
    std::optional<v1::PartyHello> hello;  // the accepted hello (its key identifies the process)
    std::deque<std::shared_ptr<const v1::VerticalMessage>> queue;  // front: in flight when writing
    size_t queued_bytes = 0;
    bool writing = false;
    std::vector<uint64_t> held_senders;  // connections waiting for this queue to drain
    std::optional<std::chrono::steady_clock::time_point> gone_since;  // after start only
    bool end_after_drain = false;
    grpc::Status end_status;
    std::optional<v1::PartyReport> psi;
    bool finished = false;
    uint64_t sent_bytes = 0, received_bytes = 0, relays_sent = 0;
    uint64_t holds = 0;  // times its reads waited for a full queue
  };
  enum class Phase { kWaitingForHellos, kRunning, kEnded };

  explicit VerticalJob(VerticalJobOptions options);

  Party* PartyOf(uint64_t connection);
  absl::Status CheckHello(const Party& party, const v1::PartyHello& hello) const;
  void StartLocked();
  void Enqueue(Party& party, v1::VerticalMessage message, bool front = false);
  void Pump(Party& party);
  void ReleaseHeld(Party& party);
  void BroadcastControl(v1::VerticalControl::Kind kind, const std::string& reason, const std::string& except = "");
  // Ends the job (once): FINISH or ABORT to every live stream, each then ended.
  void EndLocked(JobState state, const std::string& why);
  void CheckTimeoutsLocked(std::chrono::steady_clock::time_point now);
  std::string MissingPartiesLocked() const;
  nlohmann::json SummaryLocked() const;
  void Note(const Actor& actor, const std::string& action, const std::string& participant, nlohmann::json value,
            const std::string& reason = "");

  const VerticalJobOptions options_;
  std::unique_ptr<RoundRecorder> recorder_;  // audit entries only; summary.json is ours
  const std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Phase phase_ = Phase::kWaitingForHellos;
  JobState end_state_ = JobState::kWaiting;
  std::string end_reason_;
  std::vector<Party> parties_;  // config order
  std::atomic<uint64_t> next_connection_{1};
  uint64_t seed_ = 0;
  int paused_by_ = 0;  // parties gone since start
  nlohmann::json epochs_ = nlohmann::json::array();
  std::optional<int64_t> intersection_size_;
  std::optional<std::chrono::steady_clock::time_point> started_at_;
};

}  // namespace cohort::server
