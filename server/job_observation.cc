#include "server/job_observation.h"

#include <fcntl.h>

#include <algorithm>
#include <span>

#include "core/bounded_json.h"
#include "core/limits.h"
#include "storage/file.h"

namespace cohort::server {

std::string DashboardState(const JobSnapshot& s, const std::vector<std::shared_ptr<const std::string>>& rounds,
                           const std::map<std::string, double>& site_epsilon, nlohmann::json audit_tail) {
  // "held" shows as waiting: the dashboard's states are the job's life, not its controls.
  const std::string status = s.state == JobState::kHeld ? "waiting" : std::string(JobStateName(s.state));
  nlohmann::json round_sites = nlohmann::json::array();
  for (const JobSnapshot::RoundSite& r : s.round_sites) round_sites.push_back({{"site", r.site}, {"phase", r.phase}});
  nlohmann::json sites = nlohmann::json::array();
  for (const JobSnapshot::Site& site : s.sites) {
    nlohmann::json entry = {{"site", site.site}, {"status", site.status}};
    entry["last_contact_seconds_ago"] =
        site.last_contact_seconds_ago ? nlohmann::json(*site.last_contact_seconds_ago) : nlohmann::json(nullptr);
    const auto spent = site_epsilon.find(site.site);
    entry["epsilon_spent"] = spent != site_epsilon.end() ? nlohmann::json(spent->second) : nlohmann::json(nullptr);
    entry["epsilon_budget"] = s.epsilon_budget > 0 ? nlohmann::json(s.epsilon_budget) : nlohmann::json(nullptr);
    sites.push_back(std::move(entry));
  }
  const nlohmann::json state = {
          {"job",
           {{"name", s.job},
            {"job_type", "horizontal"},
            {"status", status},
            {"rounds_total", s.rounds_total},
            {"elapsed_seconds", s.elapsed_seconds}}},
          {"round",
           {{"number", s.round},
            {"attempt", s.attempt},
            {"phase", std::string(RoundPhaseName(s.phase))},
            {"sites", std::move(round_sites)}}},
          {"sites", std::move(sites)},
          {"audit_tail", std::move(audit_tail)}};
  // The rounds' texts go in as the last member: the object's closing brace becomes
  // `,"summary_rounds":[...]}`.
  std::string text = state.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.pop_back();
  text += ",\"summary_rounds\":[";
  for (size_t i = 0; i < rounds.size(); ++i) {
    if (i > 0) text += ',';
    text += *rounds[i];
  }
  text += "]}";
  return text;
}

nlohmann::json ReadAuditTail(const std::filesystem::path& path, size_t entries) {
  constexpr uint64_t kWindow = 256 * 1024;
  nlohmann::json tail = nlohmann::json::array();
  absl::StatusOr<storage::File> file = storage::File::Open(path, O_RDONLY);
  if (!file.ok()) return tail;
  absl::StatusOr<uint64_t> size = file->Size();
  if (!size.ok() || *size == 0) return tail;
  const uint64_t start = *size > kWindow ? *size - kWindow : 0;
  std::string bytes(*size - start, '\0');
  absl::StatusOr<size_t> read = file->PreadAll(start, std::as_writable_bytes(std::span(bytes.data(), bytes.size())));
  if (!read.ok()) return tail;
  bytes.resize(*read);
  // Whole lines only: the window's first line is cut unless the window is the whole
  // file, and a line still being written has no "\n" yet.
  size_t begin = 0;
  if (start > 0) {
    begin = bytes.find('\n');
    if (begin == std::string::npos) return tail;
    ++begin;
  }
  const size_t end = bytes.rfind('\n');
  if (end == std::string::npos || end < begin) return tail;
  std::vector<std::string_view> lines;
  std::string_view whole(bytes.data() + begin, end - begin);
  while (!whole.empty()) {
    const size_t newline = whole.find('\n');
    lines.push_back(whole.substr(0, newline));
    whole = newline == std::string_view::npos ? std::string_view() : whole.substr(newline + 1);
  }
  const size_t first = lines.size() > entries ? lines.size() - entries : 0;
  for (size_t i = first; i < lines.size(); ++i) {
    absl::StatusOr<nlohmann::json> entry = core::ParseBoundedJson(lines[i], core::kAuditLineJson, "audit log line");
    if (entry.ok()) tail.push_back(std::move(*entry));
  }
  return tail;
}

}  // namespace cohort::server
