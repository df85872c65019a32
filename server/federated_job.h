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

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/fedavg.h"
#include "core/job_config.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "core/round_tracker.h"

namespace cohort::server {

using Evaluator = std::function<absl::StatusOr<core::EvalMetrics>(const core::ParameterSet&)>;
using ModelWriter = std::function<absl::Status(const core::ParameterSet&, const std::filesystem::path&)>;

struct JobOptions {
  core::JobConfig config;
  core::ParameterSet initial_model;
  std::filesystem::path out_dir;
  Evaluator evaluate;         // optional: server-side test set evaluation after each round
  ModelWriter write_model;    // optional: writes OUT/model.pt at the end
};

// What a client gets when it asks for work.
struct Task {
  enum class Kind { kTrain, kWait, kDone } kind = Kind::kWait;
  uint64_t round = 0;
  uint32_t total_rounds = 0;
  uint64_t model_version = 0;
  std::string training_config_json;
  std::shared_ptr<const core::ParameterSet> model;
  std::string message;
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
  absl::StatusOr<std::string> Join(const std::string& site, uint64_t num_samples);
  // Blocks up to `wait` for this client's next task.
  Task WaitForTask(const std::string& client_id, std::chrono::milliseconds wait);
  // Checks the header of an upload and opens a receiver that spools it. The receiver's
  // chunks are checked as they arrive; CommitUpdate adds a complete, valid update.
  absl::StatusOr<core::UpdateReceiver> BeginUpdate(const UpdateHeader& header);
  absl::Status CommitUpdate(const UpdateHeader& header, core::UpdateReceiver receiver);
  // Records that an upload failed mid-stream: the client is out of this round.
  void RejectUpdate(const UpdateHeader& header, const absl::Status& why);
  absl::Status Heartbeat(const std::string& client_id);

  nlohmann::json Status() const;
  std::string job_id() const { return config_.name; }
  const core::JobConfig& config() const { return config_; }
  bool finished() const;

 private:
  explicit FederatedJob(JobOptions options);

  struct Client {
    uint64_t num_samples = 0;
    core::Clock::time_point last_seen;
    bool lost = false;
    uint64_t last_task_round = 0;
  };
  struct Report {
    uint64_t samples = 0;
    core::TrainMetrics metrics;
    double update_norm = 0;
  };

  std::vector<std::string> AliveClientsLocked(core::Clock::time_point now) const;
  void MarkLostClientsLocked(core::Clock::time_point now);
  absl::Status CloseRound(uint64_t round, int attempts, core::Clock::time_point started);
  absl::Status WriteOutputs();

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
};

}  // namespace cohort::server
