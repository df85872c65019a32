#pragma once
// A site's Prometheus metrics (`cohort client --metrics-listen`, docs/operability.md):
// rounds trained, training time, bytes sent and received, the latest local loss and
// accuracy, the privacy budget spent, and the process's memory and CPU. The agent feeds
// them as it goes; thread-safe.

#include <cstdint>
#include <optional>
#include <string>

#include "core/metrics.h"
#include "observe/metrics_registry.h"

namespace cohort::client {

class SiteMetrics {
 public:
  SiteMetrics();
  SiteMetrics(const SiteMetrics&) = delete;
  SiteMetrics& operator=(const SiteMetrics&) = delete;

  // A model download completed: the bytes of the model received.
  void ModelReceived(uint64_t bytes);
  // A round's update was accepted by the server: its training metrics, the bytes its
  // upload wrote, and the site's epsilon spent after it (DP-SGD; nullopt otherwise).
  void RoundTrained(const core::TrainMetrics& metrics, uint64_t bytes_sent, std::optional<double> epsilon_spent);

  // The page, with the process's statistics read now.
  std::string Render();

 private:
  observe::Registry registry_;
  observe::Counter* rounds_trained_;
  observe::Counter* train_seconds_;
  observe::Counter* sent_;
  observe::Counter* received_;
  observe::Gauge* train_loss_;
  observe::Gauge* eval_loss_;
  observe::Gauge* eval_accuracy_;
  observe::Gauge* epsilon_spent_;
  observe::Gauge* resident_bytes_;
  observe::Counter* cpu_seconds_;
};

}  // namespace cohort::client
