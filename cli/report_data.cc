#include "cli/report_data.h"

#include <fcntl.h>

#include <array>
#include <cstring>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "audit/entry.h"
#include "audit/reader.h"
#include "core/bounded_json.h"
#include "core/limits.h"
#include "storage/file.h"

namespace cohort::cli {
namespace {

// The summary a running job keeps in its checkpoint (core/checkpoint.h gives the layout:
// "COHORTCK", u32 version 2, u32 header length, header JSON {..., "summary": {...}}).
// Read without the MAC, which needs the server's key: the report only displays it, and
// says where it came from; nothing is resumed or trusted from it.
absl::StatusOr<nlohmann::json> ReadCheckpointSummaryForDisplay(const std::filesystem::path& path) {
  absl::StatusOr<storage::File> file = storage::File::Open(path, O_RDONLY);
  if (!file.ok()) return file.status();
  std::array<std::byte, 16> prefix{};
  absl::StatusOr<std::size_t> got = file->PreadAll(0, prefix);
  if (!got.ok()) return got.status();
  auto u32 = [&](std::size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint32_t>(prefix[at + static_cast<std::size_t>(i)]);
    return v;
  };
  if (*got != prefix.size() || std::memcmp(prefix.data(), "COHORTCK", 8) != 0 || u32(8) != 2) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", path.string(), " is not a version 2 Cohort checkpoint (\"COHORTCK\" header)"));
  }
  const uint32_t header_length = u32(12);
  if (header_length > core::kCheckpointHeaderJson.max_bytes) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path.string(), ": header of ", header_length,
                                            " bytes, more than the ", core::kCheckpointHeaderJson.max_bytes,
                                            " a checkpoint may have"));
  }
  std::string header(header_length, '\0');
  got = file->PreadAll(prefix.size(), std::as_writable_bytes(std::span(header)));
  if (!got.ok()) return got.status();
  if (*got != header_length) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path.string(), " ends inside its header"));
  }
  absl::StatusOr<nlohmann::json> parsed =
      core::ParseBoundedJson(header, core::kCheckpointHeaderJson, absl::StrCat("checkpoint ", path.string()));
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object() || !parsed->contains("summary") || !(*parsed)["summary"].is_object()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path.string(), ": its header has no summary object"));
  }
  return std::move((*parsed)["summary"]);
}

std::optional<double> Number(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

struct SiteView {
  std::string status = "unknown";
  std::optional<absl::Time> last_contact;
  std::optional<double> epsilon_spent;
};

void Touch(SiteView& site, absl::Time when) {
  if (!site.last_contact || *site.last_contact < when) site.last_contact = when;
}

}  // namespace

absl::StatusOr<nlohmann::json> LoadReportState(const ReportSources& sources) {
  const std::filesystem::path& dir = sources.run_dir;
  std::error_code ec;
  nlohmann::json summary;
  std::string source;
  if (std::filesystem::exists(dir / "summary.json", ec)) {
    absl::StatusOr<nlohmann::json> read =
        core::ReadBoundedJsonFile(dir / "summary.json", core::kCheckpointHeaderJson, "summary");
    if (!read.ok()) return read.status();
    summary = std::move(*read);
    source = "rounds from summary.json";
  } else if (std::filesystem::exists(dir / "checkpoint.bin", ec)) {
    absl::StatusOr<nlohmann::json> read = ReadCheckpointSummaryForDisplay(dir / "checkpoint.bin");
    if (!read.ok()) return read.status();
    summary = std::move(*read);
    source = "job in progress: rounds from checkpoint.bin, read without the server's key (not authenticated)";
  } else {
    return absl::NotFoundError(absl::StrCat("run directory ", dir.string(),
                                            " has neither summary.json nor checkpoint.bin: pass the --out directory "
                                            "of `cohort run` or `cohort server` after its first round"));
  }
  if (!summary.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("summary in ", dir.string(), ": expected a JSON object"));
  }
  nlohmann::json rounds = summary.value("rounds", nlohmann::json::array());
  if (!rounds.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("summary in ", dir.string(), ": \"rounds\" is not an array"));
  }

  // The job's config: summary.json carries it at the end; before that, the job.json that
  // `cohort run` keeps beside it.
  nlohmann::json config = summary.value("config", nlohmann::json());
  if (!config.is_object() && std::filesystem::exists(dir / "job.json", ec)) {
    config = core::ReadBoundedJsonFile(dir / "job.json", core::kJobConfigJson, "job config").value_or(nlohmann::json());
  }
  std::optional<double> rounds_total, epsilon_budget;
  if (config.is_object()) {
    rounds_total = Number(config.value("federation", nlohmann::json()), "rounds");
    epsilon_budget = Number(config.value("privacy", nlohmann::json()), "target_epsilon");
  }

  std::string status = summary.value("status", std::string("running"));
  if (source.starts_with("job in progress")) status = "running";
  std::map<std::string, SiteView> sites;
  for (const nlohmann::json& r : rounds) {
    if (!r.is_object()) continue;
    for (const nlohmann::json& c : r.value("clients", nlohmann::json::array())) {
      if (c.is_object() && c.contains("site") && c["site"].is_string()) sites[c["site"].get<std::string>()];
    }
  }

  // The audit log: who joined, was lost, revoked or declined, when each was last heard
  // from, and what each spent.
  nlohmann::json audit_tail = nlohmann::json::array();
  std::optional<absl::Time> started, ended;
  const std::filesystem::path audit_log = sources.audit_log.empty() ? dir / "audit.log" : sources.audit_log;
  bool have_audit = false;
  if (std::filesystem::exists(audit_log, ec)) {
    absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(audit_log);
    if (!read.ok()) return read.status();
    have_audit = true;
    const std::vector<audit::Entry>& entries = read->entries;
    for (const audit::Entry& e : entries) {
      const std::string& who = e.target.participant;
      if (e.action == audit::action::kJobCreate || e.action == audit::action::kJobStart) {
        if (!started) started = e.timestamp;
      } else if (e.action == audit::action::kJobEnd) {
        ended = e.timestamp;
        if (e.new_value.is_object() && e.new_value.contains("state") && e.new_value["state"].is_string()) {
          status = e.new_value["state"].get<std::string>();
        }
      } else if (e.action == audit::action::kParticipantJoin && !who.empty()) {
        SiteView& site = sites[who];
        if (site.status != "revoked") site.status = "live";
        Touch(site, e.timestamp);
      } else if (e.action == audit::action::kParticipantLost && !who.empty()) {
        SiteView& site = sites[who];
        if (site.status != "revoked") site.status = "dropped";
      } else if (e.action == audit::action::kParticipantRevoke && !who.empty()) {
        sites[who].status = "revoked";
      } else if (e.action == audit::action::kParticipantDecline && !who.empty()) {
        sites[who].status = "declined";
      } else if (e.action == audit::action::kPrivacySpend && !who.empty()) {
        SiteView& site = sites[who];
        // The server's mirror of the site's ledger (job_epsilon) when it kept one.
        std::optional<double> spent = Number(e.new_value, "job_epsilon");
        if (!spent) spent = Number(e.new_value, "epsilon");
        if (spent) site.epsilon_spent = spent;
        Touch(site, e.timestamp);
      } else if (e.action == audit::action::kModelPublish && e.new_value.is_object()) {
        for (const nlohmann::json& c : e.new_value.value("contributors", nlohmann::json::array())) {
          if (c.is_string()) Touch(sites[c.get<std::string>()], e.timestamp);
        }
      }
    }
    const std::size_t first = entries.size() > kAuditTailEntries ? entries.size() - kAuditTailEntries : 0;
    for (std::size_t i = first; i < entries.size(); ++i) {
      // ReadEntries checked every line (and its depth): parsing it again cannot fail.
      audit_tail.push_back(nlohmann::json::parse(entries[i].line, nullptr, /*allow_exceptions=*/false));
    }
  }

  const absl::Time now = absl::Now();
  std::optional<double> elapsed;
  if (started) elapsed = absl::ToDoubleSeconds((ended ? *ended : now) - *started);
  if (!elapsed) {
    double sum = 0;
    for (const nlohmann::json& r : rounds) {
      std::optional<double> s = Number(r, "elapsed_seconds");
      if (!s) s = Number(r, "wall_seconds");
      sum += s.value_or(0.0);
    }
    elapsed = sum;
  }

  nlohmann::json site_rows = nlohmann::json::array();
  for (const auto& [name, site] : sites) {
    nlohmann::json row = {{"site", name},
                          {"status", site.status == "unknown" && !have_audit ? "unknown (no audit log)" : site.status},
                          {"last_contact_seconds_ago", nullptr},
                          {"epsilon_spent", nullptr},
                          {"epsilon_budget", nullptr}};
    if (site.last_contact) {
      row["last_contact_seconds_ago"] = absl::ToDoubleSeconds(now - *site.last_contact);
      // A report is read later than it is written: the page shows the time itself.
      row["last_contact_time"] = audit::FormatEntryTime(*site.last_contact);
    }
    if (site.epsilon_spent) row["epsilon_spent"] = *site.epsilon_spent;
    if (site.epsilon_spent && epsilon_budget) row["epsilon_budget"] = *epsilon_budget;
    site_rows.push_back(std::move(row));
  }

  nlohmann::json job = {{"name", summary.value("job", std::string())},
                        {"job_type", summary.value("job_type", std::string("horizontal"))},
                        {"status", status},
                        {"rounds_total", rounds_total ? nlohmann::json(static_cast<int64_t>(*rounds_total))
                                                      : nlohmann::json(nullptr)},
                        {"elapsed_seconds", *elapsed}};
  if (!have_audit) source += "; no audit log at " + audit_log.string();
  return nlohmann::json{{"job", std::move(job)},
                        {"round", nullptr},
                        {"summary_rounds", std::move(rounds)},
                        {"sites", std::move(site_rows)},
                        {"audit_tail", std::move(audit_tail)},
                        {"report", {{"run_dir", dir.string()}, {"generated", audit::FormatEntryTime(now)},
                                    {"source", source}}}};
}

}  // namespace cohort::cli
