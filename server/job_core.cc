#include "server/job_core.h"

namespace cohort::server {

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kHeld: return "held";
    case JobState::kWaiting: return "waiting";
    case JobState::kRunning: return "running";
    case JobState::kFinished: return "finished";
    case JobState::kStopped: return "stopped";
    case JobState::kFailed: return "failed";
  }
  return "unknown";
}

namespace {

std::chrono::milliseconds ToMillis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

JobCore::JobCore(core::JobConfig job_config, std::shared_ptr<const core::ParameterSet> initial,
                 ParticipantRegistry registry)
    : config(std::move(job_config)),
      global(std::move(initial)),
      tracker(static_cast<size_t>(config.federation.min_clients), ToMillis(config.federation.round_timeout_s)),
      participants(std::move(registry)) {}

core::Clock::duration JobCore::heartbeat_timeout() const { return ToMillis(config.federation.heartbeat_timeout_s); }

core::JobConfig JobCore::EffectiveConfigLocked() const {
  core::JobConfig effective = config;
  effective.federation.sites = participants.enrolled();
  effective.federation.revoked_sites = participants.revoked();
  return effective;
}

void JobCore::AddListener(std::function<void()> listener) {
  std::lock_guard lock(listeners_mu_);
  listeners_.push_back(std::move(listener));
}

void JobCore::NotifyListeners() {
  std::vector<std::function<void()>> listeners;
  {
    std::lock_guard lock(listeners_mu_);
    listeners = listeners_;
  }
  for (const std::function<void()>& listener : listeners) listener();
}

}  // namespace cohort::server
