#pragma once
// A horizontal job's Prometheus metrics (docs/operability.md lists each family): counters
// and histograms fed by the job's parts as things happen, gauges set from a snapshot of
// the job when a scraper asks, and the process's memory and CPU.
//
// Every event method is thread-safe and takes no lock of the job's: the round driver, the
// upload and download reactors call them as they go. Render formats outside the job's lock
// from a snapshot taken under it (FederatedJob::Observe).

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/metrics.h"
#include "observe/metrics_registry.h"
#include "server/job_types.h"
#include "server/round_progress.h"

namespace cohort::server {

struct JobSnapshot;  // server/job_observation.h

class JobMetrics {
 public:
  JobMetrics();
  JobMetrics(const JobMetrics&) = delete;
  JobMetrics& operator=(const JobMetrics&) = delete;

  void RoundStarted();  // an attempt opened (a retry counts again)
  void RoundRetried();  // an attempt ended without enough updates and will be run again
  // A round closed and is on record: its phases (all but the evaluation, which comes
  // later), the strategy's report (client-level DP's "privacy.epsilon"), and the DP-SGD
  // spends its sites reported.
  void RoundCompleted(const RoundPhaseSeconds& phases, const nlohmann::json& strategy_report,
                      const std::map<std::string, double>& site_epsilon);
  // The server's test of a round's model, done beside the next round, and how long it took.
  void RoundEvaluated(double seconds, const core::EvalMetrics& test);
  void UpdateAccepted();
  // `reason`: the refusal's status code in lower case ("data_loss", "invalid_argument",
  // "failed_precondition", ...), as the upload answered it.
  void UpdateRejected(std::string_view reason);
  void BytesReceived(size_t bytes) { received_->Increment(static_cast<double>(bytes)); }
  void BytesSent(size_t bytes) { sent_->Increment(static_cast<double>(bytes)); }

  // The latest epsilon each site reported spent (DP-SGD), for the dashboard.
  std::map<std::string, double> SiteEpsilon() const;
  // The page, with the gauges set from `snapshot` and the process's statistics.
  std::string Render(const JobSnapshot& snapshot);

 private:
  observe::Registry registry_;
  observe::Counter* rounds_started_;
  observe::Counter* rounds_completed_;
  observe::Counter* rounds_retried_;
  observe::Family<observe::Histogram>* phase_seconds_;
  observe::Counter* updates_accepted_;
  observe::Family<observe::Counter>* updates_rejected_;
  observe::Counter* received_;
  observe::Counter* sent_;
  observe::Gauge* test_loss_;
  observe::Gauge* test_accuracy_;
  observe::Gauge* job_epsilon_;
  observe::Family<observe::Gauge>* epsilon_spent_;
  observe::Family<observe::Gauge>* epsilon_left_;
  observe::Family<observe::Gauge>* job_state_;
  observe::Gauge* round_;
  observe::Gauge* rounds_total_;
  observe::Gauge* model_version_;
  observe::Gauge* clients_joined_;
  observe::Gauge* clients_live_;
  observe::Gauge* clients_dropped_;
  observe::Gauge* clients_revoked_;
  observe::Gauge* clients_declined_;
  observe::Gauge* resident_bytes_;
  observe::Counter* cpu_seconds_;

  mutable std::mutex epsilon_mu_;
  std::map<std::string, double> site_epsilon_;
};

}  // namespace cohort::server
