#pragma once
// The client agent a data site runs: joins the job, pulls each task, trains on local data
// through the training layer, and pushes its update back in chunks. It keeps a heartbeat
// going while it trains, and rides out a server restart by reconnecting.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "training/data_parallel.h"
#include "training/dataset.h"

namespace cohort::client {

class SiteMetrics;  // client/site_metrics.h

struct AgentOptions {
  std::string server_address;  // host:port
  // The site's startup kit (crypto/startup_kit.h): mutual TLS, and the site name is the
  // certificate's. Empty only in --insecure mode (plaintext, self-declared name).
  std::string kit_dir;
  std::string site;
  std::string job_id;          // empty: whatever job the server runs
  training::Dataset train;     // this site's training rows
  training::Dataset eval;      // this site's held-out rows (may be empty)
  uint64_t seed = 0;
  int threads = 1;             // overrides training_config.threads when > 0
  double connect_timeout_s = 120;  // give up when the server stays unreachable this long
  // The site's privacy ledger (client/site_ledger.h): every DP-SGD spend on this site's
  // data, across jobs and restarts. Keep it with the data.
  std::string ledger_path;
  // Overrides training_config.device when not empty (`cohort client --device`).
  std::string device;
  // This site's copy of a LoRA job's base model (`cohort client --base-model`); empty: the
  // path in the job's model_config.lora.base_model. Checked against the job's digest.
  std::string base_model;
  // Data parallelism: this process is worker 0 of the site's group (training/data_parallel.h),
  // whose other workers run training::RunFollower. Must outlive the agent; null: trains alone.
  training::Collective* group = nullptr;
  // Optional: the site's metrics (`cohort client --metrics-listen`); must outlive the agent.
  SiteMetrics* metrics = nullptr;
  // Tests only (`cohort client --insecure --dp-sgd-seed-for-tests`): DP-SGD's sampling and
  // noise from this seed instead of the OS's secure randomness, so that a run can be replayed
  // and compared (training::TrainerOptions::dp_sgd_seed_for_tests). Whoever knows it can
  // subtract the noise: never set where privacy matters.
  std::optional<uint64_t> dp_sgd_seed_for_tests;
};

// Runs until the server says the job is done (OK), or fails (server unreachable, bad model
// config, training error).
absl::Status RunAgent(AgentOptions options);

}  // namespace cohort::client
