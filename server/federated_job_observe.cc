// FederatedJob: what the dashboard and /metrics see (server/job_observation.h,
// server/job_metrics.h). One short hold of the job's lock per request; the formatting, the
// summary copy and the audit log's tail happen outside it.
#include "server/federated_job.h"

namespace cohort::server {
namespace {

constexpr size_t kAuditTailEntries = 50;

}  // namespace

JobSnapshot FederatedJob::Observe() const {
  JobSnapshot s;
  const core::Clock::time_point now = core::Clock::now();
  std::lock_guard lock(core_.mu);
  const RoundProgress& progress = core_.progress;
  s.job = core_.config.name;
  s.state = core_.state;
  s.rounds_total = core_.config.federation.rounds;
  s.completed_rounds = core_.completed_rounds;
  s.model_version = core_.model_version;
  s.elapsed_seconds = progress.ElapsedSeconds(now);
  s.phase = Ended(core_.state) ? RoundProgress::Phase::kDone : progress.phase;
  s.round = progress.round != 0 ? progress.round : core_.completed_rounds;
  s.attempt = progress.attempt;
  const ParticipantRegistry& registry = core_.participants;
  const core::RoundTracker& tracker = core_.tracker;
  if (progress.round != 0 && tracker.round() == progress.round) {
    for (const std::string& site : tracker.selected()) {
      const ParticipantRegistry::Participant* p = registry.Find(site);
      const char* phase = tracker.reported().contains(site)   ? "reported"
                          : tracker.failed().contains(site)   ? "failed"
                          : progress.uploading.contains(site) ? "uploading"
                          : progress.downloaded.contains(site) ? "training"
                          : p != nullptr && p->last_task_round == progress.round ? "downloading"
                                                                                 : "selected";
      s.round_sites.push_back({site, phase});
    }
  }
  const core::Clock::duration timeout = core_.heartbeat_timeout();
  for (const auto& [site, p] : registry.joined()) {
    const bool silent = p.lost || now - p.last_seen > timeout;
    const std::string status = p.declined                ? "declined"
                               : registry.IsRevoked(site) ? "revoked"
                               : silent                   ? "dropped"
                                                          : "live";
    s.sites.push_back({site, status, std::chrono::duration<double>(now - p.last_seen).count()});
    s.declined += status == "declined";
    s.dropped += status == "dropped";
    s.live += status == "live";
  }
  for (const std::string& site : registry.revoked()) {
    if (registry.Find(site) == nullptr) s.sites.push_back({site, "revoked", std::nullopt});
  }
  s.joined = registry.joined().size();
  s.revoked = registry.revoked().size();
  if (core_.config.privacy.mechanism == "dp_sgd") s.epsilon_budget = core_.config.privacy.target_epsilon;
  return s;
}

std::string FederatedJob::MetricsPage() { return metrics_->Render(Observe()); }

std::string FederatedJob::DashboardState() const {
  const JobSnapshot snapshot = Observe();
  const audit::Writer* log = recorder_->audit_log();
  nlohmann::json tail = log != nullptr ? ReadAuditTail(log->path(), kAuditTailEntries) : nlohmann::json::array();
  return server::DashboardState(snapshot, recorder_->round_texts(), metrics_->SiteEpsilon(), std::move(tail));
}

void FederatedJob::NoteDownloaded(const std::string& client_id, uint64_t round) {
  std::lock_guard lock(core_.mu);
  if (core_.tracker.open() && core_.progress.round == round) core_.progress.downloaded.insert(client_id);
}

}  // namespace cohort::server
