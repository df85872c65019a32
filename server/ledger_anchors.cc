#include "server/ledger_anchors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/limits.h"
#include "storage/sha256.h"

namespace cohort::server {
namespace {

std::string Short(const std::string& hash) { return hash.empty() ? "(none)" : hash.substr(0, 16) + "…"; }

std::string Describe(const LedgerPosition& p) {
  if (!p.present) return "no ledger";
  return absl::StrCat(p.spends, " spends, epsilon ", p.epsilon_spent, ", last line ", Short(p.head_sha256));
}

// Ahead: more spends, or the same spends with nothing new (a first header only).
bool IsAhead(const LedgerPosition& candidate, const std::optional<LedgerPosition>& anchor) {
  if (!candidate.present) return false;
  if (!anchor || !anchor->present) return true;
  return candidate.spends > anchor->spends;
}

bool IsHex64(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckLedgerAgainstAnchor(const std::string& site, const LedgerPosition& reported,
                                      const std::optional<LedgerPosition>& anchor) {
  if (!anchor || !anchor->present) return absl::OkStatus();
  const std::string anchored = absl::StrCat("this server anchored ", Describe(*anchor));
  if (!reported.present) {
    if (anchor->spends == 0) return absl::OkStatus();  // nothing was spent: nothing was lost
    return absl::FailedPreconditionError(absl::StrCat(
        "site ", site, " has no privacy ledger, but ", anchored,
        ": the ledger file was deleted or emptied, which would reset the site's budget; restore it from a "
        "backup of the site's ledger file and join again"));
  }
  if (reported.header_sha256 != anchor->header_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "site ", site, "'s privacy ledger has a different header (SHA-256 ", Short(reported.header_sha256),
        ") from the one this server anchored when it first saw the site (", Short(anchor->header_sha256),
        "): the header, which holds the budget, was rewritten or the ledger replaced; restore the original "
        "ledger file from a backup (a budget changes only with the federation's agreement and a new site "
        "identity)"));
  }
  if (reported.spends < anchor->spends) {
    return absl::FailedPreconditionError(absl::StrCat(
        "site ", site, "'s privacy ledger is behind: it holds ", Describe(reported), " but ", anchored,
        "; it was cut back or replaced by an older copy: restore the newest backup of the ledger file"));
  }
  if (reported.spends == anchor->spends && reported.head_sha256 != anchor->head_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "site ", site, "'s privacy ledger was rewritten: it holds ", Describe(reported), " but ", anchored,
        "; restore the ledger file from a backup"));
  }
  // Epsilon composes upwards; the replay the site's own Open does makes it exact, so any
  // decrease is a rewrite (a tolerance only for printing differences).
  if (reported.epsilon_spent + 1e-9 * std::max(1.0, anchor->epsilon_spent) < anchor->epsilon_spent) {
    return absl::FailedPreconditionError(absl::StrCat(
        "site ", site, "'s privacy ledger spent less than before: it holds ", Describe(reported), " but ",
        anchored, "; restore the ledger file from a backup"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LedgerAnchors>> LedgerAnchors::Open(const std::filesystem::path& state_dir) {
  std::error_code ec;
  if (!std::filesystem::exists(state_dir, ec)) {
    std::filesystem::create_directories(state_dir, ec);
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat("server state directory ", state_dir.string(),
                                                        ": cannot create it: ", ec.message(),
                                                        "; pass --state DIR naming a writable directory"));
    }
    ::chmod(state_dir.c_str(), 0700);
  }
  std::unique_ptr<LedgerAnchors> anchors(new LedgerAnchors(state_dir / kFileName));
  storage::AppendLogOptions options;
  options.kind = "ledger anchors";
  options.mode = 0600;
  options.max_line_bytes = core::kLedgerLineJson.max_bytes;
  options.chain_hash = [](std::string_view line) { return storage::Sha256Hex(line); };
  absl::StatusOr<std::unique_ptr<storage::AppendLog>> log = storage::AppendLog::Open(
      anchors->path_, std::move(options), [&anchors](const storage::LogLine& line) { return anchors->ReplayLine(line); });
  if (!log.ok()) return log.status();
  anchors->log_ = std::move(*log);
  spdlog::info("ledger anchors {}: {} sites", anchors->path_.string(), anchors->anchors_.size());
  return anchors;
}

absl::Status LedgerAnchors::ReplayLine(const storage::LogLine& line) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("ledger anchors ", path_.string(), ": line ", line.number, ": ", why,
                                            "; restore the file from a backup"));
  };
  absl::StatusOr<nlohmann::json> parsed = core::ParseBoundedJson(line.text, core::kLedgerLineJson, "anchor");
  if (!parsed.ok()) return bad(parsed.status().message());
  const nlohmann::json& j = *parsed;
  if (!j.is_object() || !j.contains("site") || !j["site"].is_string() || !IsHex64(j.value("header_sha256", nlohmann::json())) ||
      !IsHex64(j.value("head_sha256", nlohmann::json())) || !j.contains("spends") ||
      !j["spends"].is_number_unsigned() || !j.contains("epsilon_spent") || !j["epsilon_spent"].is_number() ||
      !j.contains("prev") || !j["prev"].is_string()) {
    return bad("expected {site, header_sha256, spends, head_sha256, epsilon_spent, prev}");
  }
  if (j["prev"].get<std::string>() != line.prev_hash) return bad("hash chain broken: lines were edited or removed");
  LedgerPosition p;
  p.present = true;
  p.header_sha256 = j["header_sha256"].get<std::string>();
  p.head_sha256 = j["head_sha256"].get<std::string>();
  p.spends = j["spends"].get<uint64_t>();
  p.epsilon_spent = j["epsilon_spent"].get<double>();
  anchors_[j["site"].get<std::string>()] = std::move(p);
  return absl::OkStatus();
}

std::optional<LedgerPosition> LedgerAnchors::Find(const std::string& site) const {
  std::lock_guard lock(mu_);
  auto it = anchors_.find(site);
  if (it == anchors_.end()) return std::nullopt;
  return it->second;
}

absl::Status LedgerAnchors::CheckJoin(const std::string& site, const LedgerPosition& reported) {
  if (absl::Status s = CheckLedgerAgainstAnchor(site, reported, Find(site)); !s.ok()) {
    spdlog::warn("site={} join refused by the ledger anchor: {}", site, std::string(s.message()));
    return s;
  }
  return Store(site, reported);
}

absl::Status LedgerAnchors::Advance(const std::string& site, const LedgerPosition& reported) {
  return Store(site, reported);
}

absl::Status LedgerAnchors::Store(const std::string& site, const LedgerPosition& position) {
  if (!position.present) return absl::OkStatus();
  if (!IsHex64(position.header_sha256) || !IsHex64(position.head_sha256) || !std::isfinite(position.epsilon_spent)) {
    return absl::InvalidArgumentError(absl::StrCat("ledger position of site ", site,
                                                   ": expected 64-hex SHA-256 hashes and a finite epsilon"));
  }
  std::lock_guard write(write_mu_);
  if (!IsAhead(position, Find(site))) return absl::OkStatus();
  nlohmann::json line = {{"site", site},
                         {"header_sha256", position.header_sha256},
                         {"spends", position.spends},
                         {"head_sha256", position.head_sha256},
                         {"epsilon_spent", position.epsilon_spent},
                         {"prev", log_->head_hash()}};
  if (absl::Status s = log_->Append(line.dump()); !s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("ledger anchors ", path_.string(), ": cannot anchor site ", site, ": ", s.message()));
  }
  std::lock_guard lock(mu_);
  anchors_[site] = position;
  return absl::OkStatus();
}

}  // namespace cohort::server
