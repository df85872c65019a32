// FederatedJob's administration (the admin service's calls) and its status views. Each
// change is recorded in the audit log and, when it must outlive the process, in
// OUT/job.db, under changes_mu_ and without the job's lock; only then is it applied to
// the job's memory.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "audit/entry.h"
#include "core/quote.h"
#include "server/federated_job.h"
#include "server/runtime_parameters.h"

namespace cohort::server {

// --- administration: recorded (audit log, job database) under changes_mu_, then applied ---

absl::Status FederatedJob::Start(const Actor& actor) {
  std::lock_guard changes(changes_mu_);
  {
    std::lock_guard lock(core_.mu);
    if (!core_.held) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id(), " is not waiting to be started (state ",
                                                        std::string(JobStateName(core_.state)), ")"));
    }
  }
  absl::StatusOr<uint64_t> seq = recorder_->Record(actor, audit::action::kJobStart, "", "", "held", "started", "");
  if (!seq.ok()) return seq.status();
  std::lock_guard lock(core_.mu);
  core_.held = false;
  spdlog::info("job={} started by {} ({})", job_id(), actor.identity, actor.role);
  core_.cv.notify_all();
  return absl::OkStatus();
}

absl::Status FederatedJob::Stop(const Actor& actor, const std::string& reason) {
  std::lock_guard changes(changes_mu_);
  std::string state;
  {
    std::lock_guard lock(core_.mu);
    if (Ended(core_.state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", job_id(), " has already ended (", std::string(JobStateName(core_.state)), ")"));
    }
    if (core_.stop_requested) return absl::OkStatus();
    state = JobStateName(core_.state);
  }
  absl::StatusOr<uint64_t> seq = recorder_->Record(actor, audit::action::kJobStop, "", "", state, "stopped", reason);
  if (!seq.ok()) return seq.status();
  std::lock_guard lock(core_.mu);
  core_.stop_requested = true;
  spdlog::info("job={} stop requested by {} ({}){}: it ends at the next round boundary", job_id(), actor.identity,
               actor.role, reason.empty() ? "" : ": " + reason);
  core_.cv.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<ParameterChange> FederatedJob::SetParameter(const Actor& actor, const std::string& parameter,
                                                           const nlohmann::json& value, const std::string& reason) {
  std::lock_guard changes(changes_mu_);
  // The name is written to the audit log even when the change is refused, and the log
  // takes only valid UTF-8 of bounded length: a name that is not a plain key (any bytes
  // an admin sent) is recorded quoted, printable ASCII and bounded, so that every refusal
  // leaves its trace.
  const bool plain_key = !parameter.empty() && parameter.size() <= core::kQuotedPrefixBytes &&
                         std::all_of(parameter.begin(), parameter.end(), [](char c) {
                           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
                         });
  std::string key = plain_key ? parameter : core::QuotePrefix(parameter);
  auto refuse = [&](absl::Status why) -> absl::Status {
    spdlog::warn("job={} set {} = {} by {} refused: {}", job_id(), key, core::JsonPrefix(value), actor.identity,
                 std::string(why.message()));
    (void)recorder_->Record(actor, audit::action::kParamSetRefused, key, "", nullptr, value, std::string(why.message()));
    return why;
  };
  core::JobConfig current;
  std::vector<ParameterValue> queued;
  uint64_t current_round = 0;
  {
    std::lock_guard lock(core_.mu);
    if (Ended(core_.state) || core_.stop_requested) {
      return refuse(absl::FailedPreconditionError(absl::StrCat("job ", job_id(), " is ending or has ended (",
                                                               std::string(JobStateName(core_.state)),
                                                               "); nothing to change")));
    }
    current = core_.config;
    for (const JobCore::PendingChange& c : core_.pending_changes) queued.push_back({c.parameter, c.new_value});
    current_round = core_.tracker.open() ? core_.tracker.round() : core_.completed_rounds;
  }
  // Checked against the configuration as it will be at the next boundary: queued changes applied.
  absl::StatusOr<core::JobConfig> at_boundary = WithChanges(current, queued);
  if (!at_boundary.ok()) return refuse(at_boundary.status());
  absl::StatusOr<std::string> resolved = ResolveSettableKey(*at_boundary, parameter);
  if (!resolved.ok()) return refuse(resolved.status());
  key = *resolved;
  const nlohmann::json old_value = ParameterValueOf(*at_boundary, key);
  const ParameterValue change[] = {{key, value}};
  absl::StatusOr<core::JobConfig> next = WithChanges(*at_boundary, change);
  if (!next.ok()) return refuse(next.status());
  if (key == "federation.rounds" &&
      static_cast<uint64_t>(next->federation.rounds) < std::max<uint64_t>(current_round, 1)) {
    return refuse(absl::InvalidArgumentError(absl::StrCat("federation.rounds: expected >= ", current_round,
                                                          " (rounds already run or running), got ",
                                                          core::JsonPrefix(value))));
  }
  absl::StatusOr<uint64_t> seq = recorder_->Record(actor, audit::action::kParamSet, key, "", old_value, value, reason);
  if (!seq.ok()) return seq.status();
  absl::StatusOr<int64_t> stored = store_->AddParameterChange(key, value, actor.identity, *seq);
  if (!stored.ok()) {
    // The log says it was accepted: say too that it never applied.
    (void)recorder_->Record(actor, audit::action::kParamSetRefused, key, "", old_value, value,
                            absl::StrCat("not saved: ", stored.status().message()));
    return stored.status();
  }
  {
    std::lock_guard lock(core_.mu);
    core_.pending_changes.push_back({*stored, key, old_value, value, actor});
  }
  ParameterChange accepted{key, old_value, value, current_round + 1, *seq};
  spdlog::info("job={} {} = {} (was {}) set by {} ({}); applies from round {}", job_id(), key,
               core::JsonPrefix(value), core::JsonPrefix(old_value), actor.identity, actor.role,
               accepted.applies_at_round);
  return accepted;
}

absl::StatusOr<uint64_t> FederatedJob::AddParticipant(const Actor& actor, const std::string& site,
                                                      const std::string& reason) {
  std::lock_guard changes(changes_mu_);
  {
    std::lock_guard lock(core_.mu);
    if (absl::Status s = core_.participants.CheckEnroll(site); !s.ok()) return s;
  }
  absl::StatusOr<uint64_t> seq =
      recorder_->Record(actor, audit::action::kParticipantAdd, "", site, nullptr, "enrolled", reason);
  if (!seq.ok()) return seq.status();
  if (absl::Status s = store_->SetParticipant(site, "enrolled", *seq); !s.ok()) return s;
  std::lock_guard lock(core_.mu);
  core_.participants.Enroll(site);
  spdlog::info("job={} site={} enrolled by {} ({})", job_id(), site, actor.identity, actor.role);
  return seq;
}

absl::StatusOr<uint64_t> FederatedJob::RevokeParticipant(const Actor& actor, const std::string& site,
                                                         const std::string& reason) {
  absl::StatusOr<uint64_t> seq;
  {
    std::lock_guard changes(changes_mu_);
    {
      std::lock_guard lock(core_.mu);
      if (absl::Status s = core_.participants.CheckRevoke(site); !s.ok()) return s;
    }
    seq = recorder_->Record(actor, audit::action::kParticipantRevoke, "", site, "enrolled", "revoked", reason);
    if (!seq.ok()) return seq.status();
    if (absl::Status s = store_->SetParticipant(site, "revoked", *seq); !s.ok()) return s;
    std::lock_guard lock(core_.mu);
    core_.participants.Revoke(site);
    if (core_.tracker.open() && core_.tracker.IsSelected(site) && !core_.tracker.reported().contains(site)) {
      core_.tracker.MarkFailed(site);
    }
    spdlog::warn("job={} site={} revoked by {} ({}){}", job_id(), site, actor.identity, actor.role,
                 reason.empty() ? "" : ": " + reason);
    core_.cv.notify_all();
  }
  core_.NotifyListeners();  // its waiting PullTask learns it is out
  return seq;
}

nlohmann::json FederatedJob::Participants() const {
  std::lock_guard lock(core_.mu);
  const auto now = core::Clock::now();
  const ParticipantRegistry& registry = core_.participants;
  const core::RoundTracker& tracker = core_.tracker;
  std::map<std::string, nlohmann::json> out;
  for (const std::string& site : registry.enrolled()) {
    out[site] = {{"site", site}, {"state", "enrolled"}, {"num_samples", 0}, {"last_seen_ms_ago", -1}};
  }
  for (const auto& [id, c] : registry.joined()) {
    std::string state = c.lost ? "lost" : "joined";
    if (!c.lost && tracker.open() && tracker.IsSelected(id)) {
      state = tracker.reported().contains(id) ? "reported" : tracker.failed().contains(id) ? "failed" : "training";
    }
    out[id] = {{"site", id},
               {"state", state},
               {"num_samples", c.declared_samples},
               {"last_seen_ms_ago", std::chrono::duration_cast<std::chrono::milliseconds>(now - c.last_seen).count()}};
  }
  for (const std::string& site : registry.revoked()) {
    nlohmann::json& p = out[site];
    if (p.is_null()) p = {{"site", site}, {"num_samples", 0}, {"last_seen_ms_ago", -1}};
    p["state"] = "revoked";
  }
  nlohmann::json list = nlohmann::json::array();
  for (auto& [site, p] : out) list.push_back(std::move(p));
  return {{"participants", list}, {"open_enrollment", registry.open_enrollment()}};
}

JobStatus FederatedJob::BriefStatus() const {
  JobStatus status;
  status.job_id = job_id();
  std::lock_guard lock(core_.mu);
  status.state = core_.state;
  status.round = core_.tracker.open() ? core_.tracker.round() : core_.completed_rounds;
  status.completed_rounds = core_.completed_rounds;
  status.total_rounds = core_.config.federation.rounds;
  status.model_version = core_.model_version;
  return status;
}

JobStatus FederatedJob::Status() const {
  JobStatus status;
  status.job_id = job_id();
  if (const audit::Writer* log = recorder_->audit_log(); log != nullptr) {
    status.audit_head = log->head_hash();
    status.audit_entries = log->entry_count();
  }
  status.summary_json = recorder_->summary_json();
  std::lock_guard lock(core_.mu);
  const auto now = core::Clock::now();
  const core::RoundTracker& tracker = core_.tracker;
  for (const auto& [id, c] : core_.participants.joined()) {
    std::string state = c.lost ? "lost" : "idle";
    if (!c.lost && tracker.open() && tracker.IsSelected(id)) {
      state = tracker.reported().contains(id) ? "reported" : tracker.failed().contains(id) ? "failed" : "training";
    }
    status.clients.push_back(
        {id, state, c.declared_samples,
         std::chrono::duration_cast<std::chrono::milliseconds>(now - c.last_seen).count()});
  }
  for (const JobCore::PendingChange& c : core_.pending_changes) {
    status.pending_changes.push_back({c.parameter, c.old_value, c.new_value, c.actor.identity});
  }
  status.state = core_.state;
  status.round = tracker.open() ? tracker.round() : core_.completed_rounds;
  status.completed_rounds = core_.completed_rounds;
  status.total_rounds = core_.config.federation.rounds;
  status.model_version = core_.model_version;
  return status;
}

}  // namespace cohort::server
