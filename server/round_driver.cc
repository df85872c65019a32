#include "server/round_driver.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "audit/entry.h"
#include "server/runtime_parameters.h"

namespace cohort::server {
namespace {

std::chrono::milliseconds ToMillis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

double Seconds(core::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

nlohmann::json RoundDriver::ApplyPendingChanges() {
  JobCore& core = *p_.core;
  nlohmann::json applied = nlohmann::json::array();
  std::lock_guard changes_lock(*p_.changes_mu);
  std::vector<JobCore::PendingChange> pending;
  core::JobConfig current;
  {
    std::lock_guard lock(core.mu);
    if (core.pending_changes.empty()) return applied;
    pending = std::move(core.pending_changes);
    core.pending_changes.clear();
    current = core.config;
  }
  std::vector<ParameterValue> values;
  for (const JobCore::PendingChange& change : pending) values.push_back({change.parameter, change.new_value});
  absl::StatusOr<core::JobConfig> next = WithChanges(current, values);
  if (!next.ok()) {
    // Each change was checked on its own when it was queued; together they still parse
    // unless two of them conflict (min_clients above clients_per_round, say).
    spdlog::error("job={} queued parameter changes conflict and were dropped: {}", current.name,
                  std::string(next.status().message()));
    std::vector<int64_t> ids;
    for (const JobCore::PendingChange& change : pending) {
      (void)p_.recorder->Record(change.actor, audit::action::kParamSetRefused, change.parameter, "", change.old_value,
                                change.new_value,
                                absl::StrCat("dropped at the round boundary: ", next.status().message()));
      ids.push_back(change.store_id);
    }
    if (absl::Status s = p_.store->DropParameterChanges(ids); !s.ok()) {
      spdlog::error("job={} {}", current.name, std::string(s.message()));
    }
    return applied;
  }
  {
    // Only the settable fields move: RPC handlers read the fixed parts without the lock.
    std::lock_guard lock(core.mu);
    for (const core::SettableParameter& parameter : core::SettableParameters()) parameter.copy(*next, core.config);
  }
  for (const JobCore::PendingChange& change : pending) {
    spdlog::info("job={} {} changed from {} to {} by {} ({})", current.name, change.parameter, change.old_value.dump(),
                 change.new_value.dump(), change.actor.identity, change.actor.role);
    applied.push_back({{"parameter", change.parameter},
                       {"old", change.old_value},
                       {"new", change.new_value},
                       {"by", change.actor.identity},
                       {"role", change.actor.role}});
  }
  return applied;
}

void RoundDriver::MarkLostLocked(core::Clock::time_point now) {
  JobCore& core = *p_.core;
  for (const std::string& site : core.participants.MarkLost(now, core.heartbeat_timeout())) {
    const ParticipantRegistry::Participant* p = core.participants.Find(site);
    const double silent = p != nullptr ? Seconds(now - p->last_seen) : 0;
    spdlog::warn("job={} site={} lost: no heartbeat for {:.1f} s", core.config.name, site, silent);
    nlohmann::json dropped = {{"silent_s", silent}};
    if (core.tracker.open() && core.tracker.IsSelected(site) && !core.tracker.reported().contains(site)) {
      core.tracker.MarkFailed(site);
      dropped["dropped_from_round"] = core.tracker.round();
      spdlog::warn("job={} round={} site={} dropped from the round", core.config.name, core.tracker.round(), site);
    }
    // Queued, not written here: this thread holds the job's lock.
    p_.recorder->Note({"server", "server"}, audit::action::kParticipantLost, site, "joined", std::move(dropped), "");
  }
}

absl::Status RoundDriver::Run() {
  JobCore& core = *p_.core;
  {
    // The job's clock continues from the last recorded round of a resumed job.
    const nlohmann::json summary = p_.recorder->summary();
    double elapsed_before = 0;
    if (summary.contains("rounds") && summary["rounds"].is_array() && !summary["rounds"].empty()) {
      elapsed_before = summary["rounds"].back().value("elapsed_seconds", 0.0);
    }
    std::lock_guard lock(core.mu);
    core.progress.run_started = core::Clock::now();
    core.progress.elapsed_before = elapsed_before;
    // A resumed job whose last recorded round lost its evaluation to the crash (it runs
    // after the checkpoint): the checkpoint's model is that round's, so evaluate it again.
    if (evaluation_.enabled() && core.completed_rounds > 0 && summary.contains("rounds") &&
        summary["rounds"].is_array() && !summary["rounds"].empty() &&
        !summary["rounds"].back().contains("test_accuracy")) {
      evaluation_.Start(core.completed_rounds, core.global);
    }
  }
  {
    std::unique_lock lock(core.mu);
    if (core.held) {
      core.state = JobState::kHeld;
      spdlog::info("job={} held: waiting for an admin to start it (cohort admin start)", core.config.name);
      core.cv.wait(lock, [&] { return !core.held || core.cancelled || core.stop_requested; });
      if (core.cancelled) return absl::CancelledError("job cancelled");
      if (core.state == JobState::kHeld) core.state = JobState::kWaiting;
    }
  }
  for (uint64_t round = core.completed_rounds + 1;; ++round) {
    const auto round_started = core::Clock::now();
    nlohmann::json changes = nlohmann::json::array();
    int attempt = 0;
    for (;;) {
      // A round boundary: queued parameter changes take effect, and a stop ends the job.
      for (auto& change : ApplyPendingChanges()) changes.push_back(std::move(change));
      std::unique_lock lock(core.mu);
      const core::FederationConfig& fed = core.config.federation;
      // Sites that declined (their privacy budget is spent) never come back: with fewer
      // than min_clients left the job cannot run another round.
      const size_t declined = core.participants.declined(), able = core.participants.able();
      const bool too_few = declined > 0 && able < static_cast<size_t>(fed.min_clients);
      std::string why_end;
      if (too_few) {
        why_end = absl::StrCat("after round ", round - 1, ": ", able, " sites can still train, ", fed.min_clients,
                               " needed; ", declined, " declined");
        p_.recorder->SetSummaryField("ended_early", why_end);
        spdlog::warn("job={} ends early: {}", core.config.name, why_end);
      }
      if (core.stop_requested || too_few || round > static_cast<uint64_t>(fed.rounds)) {
        const bool stopped = core.stop_requested;
        if (stopped) spdlog::info("job={} stopped by an admin after round {}", core.config.name, core.completed_rounds);
        if (why_end.empty()) why_end = stopped ? "stopped by an admin" : "every round completed";
        lock.unlock();
        return End(stopped ? JobState::kStopped : JobState::kFinished, why_end);
      }
      core.progress.phase = RoundProgress::Phase::kWaiting;
      core.progress.round = round;
      core.progress.attempt = attempt;
      core.progress.boundary = round_started;
      // Wait for enough live clients to start the round.
      auto last_notice = core::Clock::time_point{};
      std::optional<core::Clock::time_point> minimum_since;
      for (;;) {
        if (core.cancelled) return absl::CancelledError("job cancelled");
        if (core.stop_requested) break;
        const auto now = core::Clock::now();
        MarkLostLocked(now);
        // Start with a full round when the clients are there; with the minimum once no
        // further client has shown up for join_grace_s.
        const size_t alive = core.participants.Alive(now, core.heartbeat_timeout()).size();
        if (alive >= static_cast<size_t>(fed.clients_per_round)) break;
        if (alive >= static_cast<size_t>(fed.min_clients)) {
          if (!minimum_since) minimum_since = now;
          if (now - *minimum_since >= ToMillis(fed.join_grace_s)) break;
        } else {
          minimum_since.reset();
        }
        if (now - last_notice > std::chrono::seconds(10)) {
          spdlog::info("job={} round={} waiting for clients: {} live, {} needed", core.config.name, round, alive,
                       fed.min_clients);
          last_notice = now;
        }
        core.cv.wait_for(lock, std::chrono::milliseconds(200));
      }
      if (core.stop_requested) continue;  // back to the boundary, which ends the job
      const auto now = core::Clock::now();
      const std::vector<std::string> selected =
          core::SelectClients(core.participants.Alive(now, core.heartbeat_timeout()),
                              static_cast<size_t>(fed.clients_per_round), core.config.seed, round,
                              static_cast<uint64_t>(attempt));
      const core::JobConfig round_config = core.config;
      RoundStart start{round, attempt, core.global, selected.size(), core.participants.able(), &round_config};
      lock.unlock();

      // The strategy drops an abandoned attempt's spool files: not under the job's lock.
      if (absl::Status s = p_.strategy->BeginRound(start); !s.ok()) {
        spdlog::warn("job={} ends before round {}: {}", round_config.name, round, std::string(s.message()));
        p_.recorder->SetSummaryField("ended_early", std::string(s.message()));
        if (s.code() == absl::StatusCode::kResourceExhausted) return End(JobState::kFinished, std::string(s.message()));
        (void)End(JobState::kFailed, std::string(s.message()));
        return s;
      }
      lock.lock();
      core.state = JobState::kRunning;
      core.reports.clear();
      core.tracker.SetLimits(static_cast<size_t>(fed.min_clients), ToMillis(fed.round_timeout_s));
      core.tracker.Open(round, selected, core::Clock::now());
      core.progress.Open(round, attempt, core::Clock::now());
      if (p_.metrics != nullptr) p_.metrics->RoundStarted();
      spdlog::info("job={} round={}/{} started{}: selected {}", core.config.name, round, fed.rounds,
                   attempt > 0 ? absl::StrCat(" (retry ", attempt, ")") : "", absl::StrJoin(selected, ", "));
      core.cv.notify_all();
      lock.unlock();
      core.NotifyListeners();  // the selected clients' waiting PullTasks can answer now
      lock.lock();

      core::RoundTracker::Decision decision = core::RoundTracker::Decision::kWait;
      while (decision == core::RoundTracker::Decision::kWait) {
        if (core.cancelled) return absl::CancelledError("job cancelled");
        core.cv.wait_for(lock, std::chrono::milliseconds(200));
        MarkLostLocked(core::Clock::now());
        decision = core.tracker.Decide(core::Clock::now());
      }
      const std::string why = core.tracker.Explain(core::Clock::now());
      core.tracker.CloseRound();
      core.cv.notify_all();
      if (decision == core::RoundTracker::Decision::kClose) {
        spdlog::info("job={} round={} closing: {}", core.config.name, round, why);
        // The phases so far (docs/operability.md): waiting until this attempt opened,
        // training until its first update header, upload until this decision.
        const core::Clock::time_point decided = core::Clock::now();
        const RoundProgress& progress = core.progress;
        RoundPhaseSeconds phases;
        phases.waiting = Seconds(progress.opened - round_started);
        const core::Clock::time_point training_ended = progress.first_upload.value_or(decided);
        phases.training = Seconds(training_ended - progress.opened);
        phases.upload = Seconds(decided - training_ended);
        core.progress.phase = RoundProgress::Phase::kClosing;
        lock.unlock();
        if (absl::Status s = CloseRound(round, attempt + 1, round_started, std::move(changes), phases); !s.ok()) {
          (void)End(JobState::kFailed, std::string(s.message()));
          return s;
        }
        // Between rounds, the pages the round freed go back to the system. Freed memory is
        // kept for the chunk streams (core::KeepFreedMemoryForChunkStreams: the heap is
        // trimmed only past 1 GiB free), and without this the holes left by buffers that
        // grow with the job (each status reply carries the whole summary) stayed resident:
        // about 10 KiB a round more than the summary itself (docs/reliability.md, "Soak").
        // The next round's streams fault their first buffers in again: once a round, not
        // once a chunk.
        ::malloc_trim(0);
        break;
      }
      ++attempt;
      core.progress.phase = RoundProgress::Phase::kWaiting;
      if (p_.metrics != nullptr) p_.metrics->RoundRetried();
      if (attempt <= fed.max_round_retries) {
        spdlog::warn("job={} round={} will be retried ({} of {}): {}", core.config.name, round, attempt,
                     fed.max_round_retries, why);
        continue;
      }
      const std::string failure = absl::StrCat("round ", round, " failed ", attempt, " times: ", why);
      lock.unlock();
      (void)End(JobState::kFailed, failure);
      return absl::AbortedError(failure);
    }
  }
}

absl::Status RoundDriver::CloseRound(uint64_t round, int attempts, core::Clock::time_point started,
                                     nlohmann::json changes, RoundPhaseSeconds phases) {
  JobCore& core = *p_.core;
  // Waits for the round's folds on the strategy's thread; nobody else touches the model.
  const core::Clock::time_point fold_started = core::Clock::now();
  absl::StatusOr<RoundOutcome> outcome = p_.strategy->CloseRound();
  if (!outcome.ok()) return outcome.status();
  phases.fold = Seconds(core::Clock::now() - fold_started);
  // The last round's evaluation, which ran while this round trained, is in its entry
  // before this round's is recorded (and with it, the checkpoint that holds both).
  if (absl::Status s = LandEvaluation(); !s.ok()) return s;
  RoundRecorder::ClosedRound closed;
  closed.test_pending = evaluation_.enabled();
  // From here to the record on disk is the checkpoint phase.
  const core::Clock::time_point record_started = core::Clock::now();
  {
    std::lock_guard lock(core.mu);
    core.progress.phase = RoundProgress::Phase::kCheckpointing;
    closed.elapsed_seconds = core.progress.ElapsedSeconds(core::Clock::now());
    closed.reports = core.reports;
    closed.training = core.config.training;
    closed.total_rounds = core.config.federation.rounds;
    closed.model_version = core.model_version + 1;
  }
  closed.round = round;
  closed.attempts = attempts;
  closed.started = started;
  closed.strategy_report = std::move(outcome->report);
  closed.strategy_state = p_.strategy->SaveState();
  closed.parameter_changes = std::move(changes);
  closed.phase_seconds = {{"waiting", phases.waiting},
                          {"training", phases.training},
                          {"upload", phases.upload},
                          {"fold", phases.fold}};
  absl::StatusOr<std::string> sha256 = p_.recorder->RecordRound(closed, *outcome->next);
  if (!sha256.ok()) return sha256.status();
  // The checkpoint holds the summary entry, so its own duration joins the entry after it.
  phases.checkpoint = Seconds(core::Clock::now() - record_started);
  p_.recorder->SetLastRoundPhaseSeconds("checkpoint", phases.checkpoint);
  if (p_.metrics != nullptr) {
    std::map<std::string, double> site_epsilon;
    for (const auto& [site, report] : closed.reports) {
      if (report.spend) site_epsilon[site] = report.spend->epsilon_after;
    }
    p_.metrics->RoundCompleted(phases, closed.strategy_report, site_epsilon);
  }
  if (absl::Status s = p_.store->RecordRound(round, closed.model_version, *sha256); !s.ok()) {
    // The checkpoint is what a restart resumes from; the table is its index.
    spdlog::error("job={} {}", core.config.name, std::string(s.message()));
  }
  std::shared_ptr<const core::ParameterSet> next = std::move(outcome->next);
  evaluation_.Start(round, next);  // reads the version the next round downloads, no copy
  std::lock_guard lock(core.mu);
  core.global = std::move(next);
  core.model_version = closed.model_version;
  core.completed_rounds = round;
  core.progress.phase = RoundProgress::Phase::kWaiting;
  return absl::OkStatus();
}

absl::Status RoundDriver::LandEvaluation() {
  std::optional<RoundEvaluation::Result> result = evaluation_.Wait();
  if (!result) return absl::OkStatus();
  if (!result->test.ok()) {
    return absl::Status(result->test.status().code(),
                        absl::StrCat("evaluating round ", result->round, "'s model: ", result->test.status().message()));
  }
  return absl::OkStatus();
}

void RoundDriver::Evaluated(const RoundEvaluation::Result& result) {
  if (!result.test.ok()) return;  // LandEvaluation fails the job with it
  p_.recorder->RecordTest(result.round, *result.test, result.seconds);
  if (p_.metrics != nullptr) p_.metrics->RoundEvaluated(result.seconds, *result.test);
}

absl::Status RoundDriver::End(JobState state, std::string why) {
  JobCore& core = *p_.core;
  // The last round's test metrics belong in the summary the end writes.
  const absl::Status landed = LandEvaluation();
  if (!landed.ok() && state != JobState::kFailed) {
    state = JobState::kFailed;
    why = std::string(landed.message());
  }
  std::shared_ptr<const core::ParameterSet> model;
  core::JobConfig effective;
  {
    std::lock_guard lock(core.mu);
    model = core.global;
    effective = core.EffectiveConfigLocked();
  }
  const absl::Status written =
      p_.recorder->Finish(state, why, *model, effective.model_config, core::ToJson(effective), p_.write_model);
  {
    std::lock_guard lock(core.mu);
    core.state = state;
    if (state == JobState::kFailed) core.failure = why;
    core.cv.notify_all();
  }
  core.NotifyListeners();  // waiting clients hear DONE
  return landed.ok() ? written : landed;
}

}  // namespace cohort::server
