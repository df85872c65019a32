#pragma once
// The in-memory state of one job, shared by its coordinator (FederatedJob, called on RPC
// threads) and its round driver (RoundDriver, on the thread that runs the job).
//
// `mu` guards every member below it, except the parts of `config` that never change
// while the job runs (name, model, data, chunk size, heartbeat timeout), which may be
// read without it. Nothing that holds `mu` does disk I/O or waits on anything but `cv`:
// the network path (Join, PullTask, PushUpdate, Heartbeat) only ever waits for memory.

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/job_config.h"
#include "core/parameter_set.h"
#include "core/round_tracker.h"
#include "server/job_types.h"
#include "server/participant_registry.h"
#include "server/round_progress.h"
#include "server/round_recorder.h"

namespace cohort::server {

struct JobCore {
  // A validated parameter change waiting for the next round boundary.
  struct PendingChange {
    int64_t store_id = 0;  // its row in OUT/job.db
    std::string parameter;
    nlohmann::json old_value, new_value;
    Actor actor;
  };

  JobCore(core::JobConfig job_config, std::shared_ptr<const core::ParameterSet> initial,
          ParticipantRegistry registry);

  core::Clock::duration heartbeat_timeout() const;
  // The configuration in force with the registry's enrollment: what summary.json shows.
  core::JobConfig EffectiveConfigLocked() const;

  // Listeners of "a waiting client might get a task now" (FederatedJob::AddChangeListener).
  void AddListener(std::function<void()> listener);
  // Calls every listener; never with `mu` held.
  void NotifyListeners();

  mutable std::mutex mu;
  std::condition_variable cv;
  core::JobConfig config;
  JobState state = JobState::kWaiting;
  std::string failure;
  bool held = false;            // waits for Start before the first round
  bool cancelled = false;
  bool stop_requested = false;
  std::shared_ptr<const core::ParameterSet> global;  // immutable snapshot clients download
  uint64_t model_version = 0;
  uint64_t completed_rounds = 0;
  core::RoundTracker tracker;
  ParticipantRegistry participants;
  std::map<std::string, SiteReport> reports;  // the open round's accepted updates
  std::vector<PendingChange> pending_changes;
  RoundProgress progress;  // the round's phase and its sites' steps, for the dashboard

 private:
  std::mutex listeners_mu_;
  std::vector<std::function<void()>> listeners_;
};

}  // namespace cohort::server
