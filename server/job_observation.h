#pragma once
// What the dashboard and the metrics see of a horizontal job: a snapshot taken under the
// job's lock in O(sites) (FederatedJob::Observe), and /api/state's JSON built from it
// outside the lock, with the summary's rounds and the audit log's tail. The JSON contract
// is in docs/operability.md.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/job_types.h"
#include "server/round_progress.h"

namespace cohort::server {

struct JobSnapshot {
  std::string job;
  JobState state = JobState::kWaiting;
  int64_t rounds_total = 0;
  uint64_t completed_rounds = 0;
  uint64_t model_version = 0;
  double elapsed_seconds = 0;
  RoundProgress::Phase phase = RoundProgress::Phase::kWaiting;
  uint64_t round = 0;
  int attempt = 0;
  struct RoundSite {
    std::string site;
    std::string phase;  // selected | downloading | training | uploading | reported | failed
  };
  std::vector<RoundSite> round_sites;  // the current attempt's selected sites
  struct Site {
    std::string site;
    std::string status;  // live | dropped | revoked | declined
    std::optional<double> last_contact_seconds_ago;  // none for a revoked site that never joined
  };
  std::vector<Site> sites;
  size_t joined = 0, live = 0, dropped = 0, revoked = 0, declined = 0;
  double epsilon_budget = 0;  // privacy.target_epsilon under dp_sgd (per site), else 0
};

// GET /api/state, as compact JSON. `rounds`: the texts of summary.json's "rounds" entries,
// spliced in as they are (server/job_summary.h keeps them as text: a poll parses none of
// them); `site_epsilon`: the latest DP-SGD spend each site reported; `audit_tail`:
// ReadAuditTail's.
std::string DashboardState(const JobSnapshot& snapshot, const std::vector<std::shared_ptr<const std::string>>& rounds,
                           const std::map<std::string, double>& site_epsilon, nlohmann::json audit_tail);

// The last `entries` entries of the audit log at `path`, each the JSON of its line (as
// `cohort audit show --json` prints them), oldest first; read from at most the file's last
// 256 KiB, so the cost does not grow with the log. An empty array when there is no log.
nlohmann::json ReadAuditTail(const std::filesystem::path& path, size_t entries);

}  // namespace cohort::server
