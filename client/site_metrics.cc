#include "client/site_metrics.h"

#include "observe/process_stats.h"

namespace cohort::client {

SiteMetrics::SiteMetrics() {
  observe::Registry& r = registry_;
  rounds_trained_ = &r.AddCounter("cohort_site_rounds_trained_total", "Rounds this site trained and the server accepted").Get();
  train_seconds_ = &r.AddCounter("cohort_site_train_seconds_total", "Seconds spent in local training").Get();
  sent_ = &r.AddCounter("cohort_site_sent_bytes_total", "Bytes of the update messages this site wrote").Get();
  received_ = &r.AddCounter("cohort_site_received_bytes_total", "Bytes of the global models this site downloaded").Get();
  train_loss_ = &r.AddGauge("cohort_site_train_loss", "Training loss of the latest accepted round").Get();
  eval_loss_ = &r.AddGauge("cohort_site_eval_loss", "Held-out loss of the latest accepted round").Get();
  eval_accuracy_ = &r.AddGauge("cohort_site_eval_accuracy", "Held-out accuracy of the latest accepted round").Get();
  epsilon_spent_ = &r.AddGauge("cohort_site_epsilon_spent", "DP-SGD: epsilon spent on this site's data (its ledger)").Get();
  resident_bytes_ = &r.AddGauge("cohort_process_resident_memory_bytes", "Resident memory of the client process").Get();
  cpu_seconds_ = &r.AddCounter("cohort_process_cpu_seconds_total", "User and system CPU time of the client process").Get();
}

void SiteMetrics::ModelReceived(uint64_t bytes) { received_->Increment(static_cast<double>(bytes)); }

void SiteMetrics::RoundTrained(const core::TrainMetrics& metrics, uint64_t bytes_sent,
                               std::optional<double> epsilon_spent) {
  rounds_trained_->Increment();
  train_seconds_->Increment(metrics.train_seconds);
  sent_->Increment(static_cast<double>(bytes_sent));
  train_loss_->Set(metrics.train_loss);
  eval_loss_->Set(metrics.eval_loss);
  eval_accuracy_->Set(metrics.eval_accuracy);
  if (epsilon_spent) epsilon_spent_->Set(*epsilon_spent);
}

std::string SiteMetrics::Render() {
  const observe::ProcessStats process = observe::ReadProcessStats();
  resident_bytes_->Set(static_cast<double>(process.resident_bytes));
  cpu_seconds_->Increment(process.cpu_seconds - cpu_seconds_->value());
  return registry_.Render();
}

}  // namespace cohort::client
