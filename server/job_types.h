#pragma once
// Value types the parts of a job share (server/federated_job.h, round_driver.h,
// round_recorder.h): who acted, what a site spent, the job's state and its status.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"

namespace cohort::server {

using Evaluator = std::function<absl::StatusOr<core::EvalMetrics>(const core::ParameterSet&)>;
using ModelWriter = std::function<absl::Status(const core::ParameterSet&, const std::filesystem::path&)>;

// Who asked for something: the identity and role from the caller's verified certificate
// ("alice", "admin"), or the claimed name with role "unauthenticated" in --insecure mode.
struct Actor {
  std::string identity;
  std::string role;
};

// Where a site's privacy ledger stands, as the site reports it (v1::LedgerPosition): what
// the server anchors (server/ledger_anchors.h).
struct LedgerPosition {
  bool present = false;       // the site has a ledger file with a header
  std::string header_sha256;  // of line 1, which holds the budget
  uint64_t spends = 0;
  std::string head_sha256;    // of the last line
  double epsilon_spent = 0;
};

// A site's DP-SGD spend for the round its update belongs to, as its ledger recorded it.
struct SiteSpend {
  double sampling_rate = 0;
  double noise_multiplier = 0;
  int64_t steps = 0;
  double clip_norm = 0;
  double epsilon_after = 0;
  LedgerPosition ledger;  // the site's ledger with this spend; present=false when not sent
};

// held: waiting for an admin's Start; waiting: for enough sites; running: a round is
// open or closing; then one of the three ends.
enum class JobState { kHeld, kWaiting, kRunning, kFinished, kStopped, kFailed };
// "held", "waiting", "running", "finished", "stopped", "failed": the names the admin API,
// summary.json and the audit log use.
std::string_view JobStateName(JobState state);
inline bool Ended(JobState state) {
  return state == JobState::kFinished || state == JobState::kStopped || state == JobState::kFailed;
}

// A snapshot of the job for the admin API and tests.
struct JobStatus {
  struct Client {
    std::string client_id;
    std::string state;  // idle | training | reported | failed | lost
    uint64_t num_samples = 0;
    int64_t last_seen_ms_ago = 0;
  };
  struct PendingChange {
    std::string parameter;
    nlohmann::json old_value, new_value;
    std::string by;
  };
  std::string job_id;
  JobState state = JobState::kWaiting;
  std::string audit_head;  // empty without an audit log
  uint64_t audit_entries = 0;
  std::vector<PendingChange> pending_changes;
  uint64_t round = 0;  // the open round, else the last completed one
  uint64_t completed_rounds = 0;
  int64_t total_rounds = 0;
  uint64_t model_version = 0;
  std::vector<Client> clients;
  // What summary.json will hold (less its "config"), as compact JSON: the text the
  // status reply carries, assembled from the rounds' texts (server/job_summary.h).
  std::string summary_json;
};

}  // namespace cohort::server
