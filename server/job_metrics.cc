#include "server/job_metrics.h"

#include <iterator>

#include "observe/process_stats.h"
#include "server/job_observation.h"

namespace cohort::server {
namespace {

constexpr const char* kPhases[] = {"waiting", "training", "upload", "fold", "evaluation", "checkpoint"};
constexpr const char* kStates[] = {"held", "waiting", "running", "finished", "stopped", "failed"};

}  // namespace

JobMetrics::JobMetrics() {
  observe::Registry& r = registry_;
  rounds_started_ = &r.AddCounter("cohort_rounds_started_total", "Round attempts opened (a retry counts again)").Get();
  rounds_completed_ = &r.AddCounter("cohort_rounds_completed_total", "Rounds closed and on record").Get();
  rounds_retried_ =
      &r.AddCounter("cohort_rounds_retried_total", "Round attempts that closed with too few updates and were retried")
           .Get();
  phase_seconds_ = &r.AddHistogram("cohort_round_phase_seconds",
                                   "Duration of each phase of a completed round (docs/operability.md defines them)",
                                   observe::DurationBuckets(), {"phase"});
  for (const char* phase : kPhases) phase_seconds_->WithLabels({phase});
  updates_accepted_ = &r.AddCounter("cohort_updates_accepted_total", "Updates that arrived whole and valid").Get();
  updates_rejected_ = &r.AddCounter("cohort_updates_rejected_total",
                                    "Update uploads refused, by the status code of the refusal", {"reason"});
  received_ = &r.AddCounter("cohort_received_bytes_total", "Sealed update chunk bytes received from sites").Get();
  sent_ = &r.AddCounter("cohort_sent_bytes_total", "Sealed model chunk bytes sent to sites").Get();
  test_loss_ = &r.AddGauge("cohort_test_loss", "The server's test loss of the latest global model").Get();
  test_accuracy_ = &r.AddGauge("cohort_test_accuracy", "The server's test accuracy of the latest global model").Get();
  job_epsilon_ = &r.AddGauge("cohort_job_epsilon_spent", "Client-level DP: the job's epsilon spent so far").Get();
  epsilon_spent_ = &r.AddGauge("cohort_epsilon_spent", "DP-SGD: the epsilon a site reported spent", {"site"});
  epsilon_left_ =
      &r.AddGauge("cohort_epsilon_budget_left", "DP-SGD: privacy.target_epsilon less the site's epsilon spent", {"site"});
  job_state_ = &r.AddGauge("cohort_job_state", "1 for the job's current state, 0 for the others", {"state"});
  round_ = &r.AddGauge("cohort_round", "The round open now, or the last one run").Get();
  rounds_total_ = &r.AddGauge("cohort_job_rounds", "The rounds the job is configured to run").Get();
  model_version_ = &r.AddGauge("cohort_model_version", "The version of the global model").Get();
  clients_joined_ = &r.AddGauge("cohort_clients_joined", "Sites that joined the job since the server started").Get();
  clients_live_ = &r.AddGauge("cohort_clients_live", "Joined sites heard from within the heartbeat timeout").Get();
  clients_dropped_ = &r.AddGauge("cohort_clients_dropped", "Joined sites lost: silent past the heartbeat timeout").Get();
  clients_revoked_ = &r.AddGauge("cohort_clients_revoked", "Sites revoked from the job").Get();
  clients_declined_ = &r.AddGauge("cohort_clients_declined", "Sites that left the job (privacy budget spent)").Get();
  resident_bytes_ = &r.AddGauge("cohort_process_resident_memory_bytes", "Resident memory of the server process").Get();
  cpu_seconds_ = &r.AddCounter("cohort_process_cpu_seconds_total", "User and system CPU time of the server process").Get();
}

void JobMetrics::RoundStarted() { rounds_started_->Increment(); }
void JobMetrics::RoundRetried() { rounds_retried_->Increment(); }
void JobMetrics::UpdateAccepted() { updates_accepted_->Increment(); }
void JobMetrics::UpdateRejected(std::string_view reason) {
  updates_rejected_->WithLabels({std::string(reason)}).Increment();
}

void JobMetrics::RoundCompleted(const RoundPhaseSeconds& phases, const nlohmann::json& strategy_report,
                                const std::map<std::string, double>& site_epsilon) {
  const std::pair<const char*, double> observed[] = {{"waiting", phases.waiting}, {"training", phases.training},
                                                     {"upload", phases.upload},   {"fold", phases.fold},
                                                     {"checkpoint", phases.checkpoint}};
  for (const auto& [phase, seconds] : observed) phase_seconds_->WithLabels({phase}).Observe(seconds);
  if (strategy_report.is_object() && strategy_report.contains("privacy") && strategy_report["privacy"].is_object()) {
    const nlohmann::json& privacy = strategy_report["privacy"];
    if (privacy.contains("epsilon") && privacy["epsilon"].is_number()) job_epsilon_->Set(privacy["epsilon"].get<double>());
  }
  {
    std::lock_guard lock(epsilon_mu_);
    for (const auto& [site, epsilon] : site_epsilon) site_epsilon_[site] = epsilon;
  }
  rounds_completed_->Increment();
}

void JobMetrics::RoundEvaluated(double seconds, const core::EvalMetrics& test) {
  phase_seconds_->WithLabels({"evaluation"}).Observe(seconds);
  test_loss_->Set(test.loss);
  test_accuracy_->Set(test.accuracy);
}

std::map<std::string, double> JobMetrics::SiteEpsilon() const {
  std::lock_guard lock(epsilon_mu_);
  return site_epsilon_;
}

std::string JobMetrics::Render(const JobSnapshot& s) {
  for (const char* state : kStates) job_state_->WithLabels({state}).Set(JobStateName(s.state) == state ? 1 : 0);
  round_->Set(static_cast<double>(s.round));
  rounds_total_->Set(static_cast<double>(s.rounds_total));
  model_version_->Set(static_cast<double>(s.model_version));
  clients_joined_->Set(static_cast<double>(s.joined));
  clients_live_->Set(static_cast<double>(s.live));
  clients_dropped_->Set(static_cast<double>(s.dropped));
  clients_revoked_->Set(static_cast<double>(s.revoked));
  clients_declined_->Set(static_cast<double>(s.declined));
  for (const auto& [site, epsilon] : SiteEpsilon()) {
    epsilon_spent_->WithLabels({site}).Set(epsilon);
    if (s.epsilon_budget > 0) epsilon_left_->WithLabels({site}).Set(s.epsilon_budget - epsilon);
  }
  const observe::ProcessStats process = observe::ReadProcessStats();
  resident_bytes_->Set(static_cast<double>(process.resident_bytes));
  cpu_seconds_->Increment(process.cpu_seconds - cpu_seconds_->value());
  return registry_.Render();
}

}  // namespace cohort::server
