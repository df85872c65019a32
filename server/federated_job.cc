#include "server/federated_job.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "audit/entry.h"
#include "core/atomic_file.h"
#include "core/checkpoint.h"
#include "core/chunking.h"

namespace cohort::server {
namespace {

constexpr const char* kCheckpointFile = "checkpoint.bin";
// The job's configuration with every runtime change applied, rewritten at each change so
// that a restarted server resumes with the parameters in force, not the file's originals.
constexpr const char* kEffectiveConfigFile = "job_config.effective.json";

// Sections whose keys an admin may change while the job runs. Everything else (the model,
// the data, the job's name and seed, the chunk size, the heartbeat timeout, the privacy
// mechanism and budget) is fixed for the life of a job: changing it midway would make
// earlier rounds, or the privacy accounting, mean something else.
bool Settable(const std::string& section, const std::string& key) {
  if (section == "training_config") return key != "threads";
  if (section == "federation") {
    return key == "rounds" || key == "clients_per_round" || key == "min_clients" || key == "round_timeout_s" ||
           key == "join_grace_s" || key == "max_round_retries" || key == "max_update_norm" || key == "strategy";
  }
  if (section == "privacy") return key == "noise_multiplier" || key == "clip_norm";
  return false;
}

constexpr const char* kSettableSections[] = {"training_config", "federation", "privacy"};

double Seconds(core::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::chrono::milliseconds ToMillis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// Spooled updates of an earlier server process (one that crashed or was stopped mid-round)
// are sealed under session keys that died with it, and a resumed round is run again from
// its start, so they can never be folded: without this they would stay on disk forever.
void RemoveStaleSpoolFiles(const std::filesystem::path& spool_dir) {
  std::error_code ec;
  size_t removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(spool_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name.starts_with("round-") &&
                      (name.ends_with(".update") || name.find(".update.kept-") != std::string::npos);
    if (ours && entry.is_regular_file(ec) && std::filesystem::remove(entry.path(), ec)) ++removed;
  }
  if (removed > 0) spdlog::info("removed {} spooled update file(s) left by an earlier run in {}", removed, spool_dir.string());
}

}  // namespace

FederatedJob::FederatedJob(JobOptions options)
    : config_(std::move(options.config)),
      out_dir_(std::move(options.out_dir)),
      evaluate_(std::move(options.evaluate)),
      write_model_(std::move(options.write_model)),
      global_(std::make_shared<const core::ParameterSet>(std::move(options.initial_model))),
      tracker_(static_cast<size_t>(config_.federation.min_clients), ToMillis(config_.federation.round_timeout_s)),
      aggregate_(global_->manifest(), /*threads=*/2),
      audit_(options.audit),
      launched_by_(std::move(options.launched_by)),
      held_(options.hold) {
  summary_ = {{"job", config_.name}, {"status", "running"}, {"rounds", nlohmann::json::array()}};
}

absl::StatusOr<std::unique_ptr<FederatedJob>> FederatedJob::Create(JobOptions options) {
  if (!options.initial_model.manifest().all_float32()) {
    return absl::InvalidArgumentError("FedAvg needs a model whose tensors are all float32");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir / "spool", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create output directory ", options.out_dir.string(), ": ", ec.message()));
  }
  const std::filesystem::path checkpoint_path = options.out_dir / kCheckpointFile;
  std::optional<core::Checkpoint> resumed;
  if (std::filesystem::exists(checkpoint_path)) {
    absl::StatusOr<core::Checkpoint> checkpoint = core::ReadCheckpoint(checkpoint_path);
    if (!checkpoint.ok()) return checkpoint.status();
    if (checkpoint->job != options.config.name) {
      return absl::FailedPreconditionError(
          absl::StrCat(checkpoint_path.string(), " belongs to job \"", checkpoint->job, "\", not \"",
                       options.config.name, "\"; use another --out directory"));
    }
    if (absl::Status s = options.initial_model.manifest().CheckSameAs(checkpoint->model.manifest()); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(checkpoint_path.string(), " holds a different model: ", s.message()));
    }
    options.initial_model = std::move(checkpoint->model);
    resumed = std::move(*checkpoint);
    // Runtime changes made before the restart stay in force.
    const std::filesystem::path effective = options.out_dir / kEffectiveConfigFile;
    if (std::filesystem::exists(effective)) {
      absl::StatusOr<core::JobConfig> changed = core::LoadJobConfig(effective.string());
      if (!changed.ok()) return changed.status();
      if (changed->name != options.config.name) {
        return absl::FailedPreconditionError(absl::StrCat(effective.string(), " belongs to job \"", changed->name,
                                                          "\", not \"", options.config.name, "\""));
      }
      options.config = std::move(*changed);
      spdlog::info("job={} parameters changed at run time restored from {}", options.config.name, effective.string());
    }
  }
  RemoveStaleSpoolFiles(options.out_dir / "spool");
  const bool created = !resumed.has_value();
  std::unique_ptr<FederatedJob> job(new FederatedJob(std::move(options)));
  if (job->config_.privacy.mechanism == "client_dp") {
    absl::StatusOr<std::unique_ptr<JobPrivacy>> privacy = JobPrivacy::Create(job->config_.privacy);
    if (!privacy.ok()) return privacy.status();
    job->privacy_ = std::move(*privacy);
  }
  if (created && job->audit_ != nullptr) {
    std::lock_guard lock(job->mu_);
    nlohmann::json config = core::ToJson(job->config_);
    absl::StatusOr<uint64_t> seq = job->RecordLocked(job->launched_by_, audit::action::kJobCreate, "", "", nullptr,
                                                     std::move(config), "");
    if (!seq.ok()) return seq.status();
  }
  if (resumed) {
    job->completed_rounds_ = resumed->round;
    job->model_version_ = resumed->model_version;
    if (resumed->summary.is_object() && resumed->summary.contains("rounds")) job->summary_ = resumed->summary;
    if (job->privacy_) {
      if (absl::Status s = job->privacy_->Restore(job->summary_["rounds"]); !s.ok()) return s;
    }
    spdlog::info("job={} resuming after round {} from {}", job->config_.name, resumed->round,
                 checkpoint_path.string());
  }
  return job;
}

absl::StatusOr<JoinResult> FederatedJob::Join(const std::string& site, uint64_t num_samples,
                                               std::string_view client_public_key) {
  if (site.empty() || site.size() > 128 || site.find_first_of("/\\ \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("site: expected a name of 1-128 characters without spaces or slashes, got \"", site, "\""));
  }
  // Keys first: a client that cannot agree keys is not registered, so it is never
  // selected for a round it could not take part in.
  absl::StatusOr<std::shared_ptr<wire::SealedSession>> session =
      wire::SealedSession::Agree(sealing_keys_, client_public_key, crypto::Side::kServer, config_.name, site);
  if (!session.ok()) {
    spdlog::warn("job={} site={} join refused: {}", config_.name, site, std::string(session.status().message()));
    return absl::Status(session.status().code(),
                        absl::StrCat("join of ", site, " to job ", config_.name, ": ", session.status().message()));
  }
  std::lock_guard lock(mu_);
  Client& client = clients_[site];
  const bool rejoin = client.last_seen != core::Clock::time_point{};
  client.num_samples = num_samples;
  client.last_seen = core::Clock::now();
  client.lost = false;
  // The previous session, if any, is dropped here: its keys are wiped once no download uses it.
  sessions_[site] = std::move(*session);
  spdlog::info("job={} site={} {} with {} samples ({} clients known), session keys agreed", config_.name, site,
               rejoin ? "re-joined" : "joined", num_samples, clients_.size());
  cv_.notify_all();
  const crypto::X25519PublicKey& public_key = sealing_keys_.public_key;
  return JoinResult{site, std::string(reinterpret_cast<const char*>(public_key.data()), public_key.size())};
}

absl::Status FederatedJob::Heartbeat(const std::string& client_id) {
  std::lock_guard lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end()) {
    return absl::NotFoundError(absl::StrCat("client ", client_id, " has not joined job ", config_.name));
  }
  it->second.last_seen = core::Clock::now();
  if (it->second.lost) {
    spdlog::info("job={} site={} is back", config_.name, client_id);
    it->second.lost = false;
    cv_.notify_all();
  }
  return absl::OkStatus();
}

Task FederatedJob::WaitForTask(const std::string& client_id, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  const auto deadline = core::Clock::now() + wait;
  Task task;
  task.total_rounds = static_cast<uint32_t>(config_.federation.rounds);
  for (;;) {
    auto it = clients_.find(client_id);
    if (it == clients_.end()) {
      task.kind = Task::Kind::kDone;
      task.message = absl::StrCat("client ", client_id, " has not joined job ", config_.name);
      return task;
    }
    it->second.last_seen = core::Clock::now();
    if (state_ == "finished" || state_ == "failed" || state_ == "stopped") {
      task.kind = Task::Kind::kDone;
      task.message = state_ == "failed" ? absl::StrCat("job failed: ", failure_) : absl::StrCat("job ", state_);
      return task;
    }
    if (tracker_.open() && tracker_.CheckMayReport(client_id, tracker_.round()).ok()) {
      auto session = sessions_.find(client_id);
      if (session == sessions_.end()) {
        // Joined without keys cannot happen through Join; ask the client to join again.
        task.kind = Task::Kind::kDone;
        task.message = absl::StrCat("client ", client_id, " has not joined job ", config_.name, " with session keys");
        return task;
      }
      task.kind = Task::Kind::kTrain;
      task.round = tracker_.round();
      task.model_version = model_version_;
      task.training_config_json = core::ToJson(config_.training).dump();
      task.privacy_config_json = core::ToJson(config_.privacy).dump();
      task.model = global_;
      task.session = session->second;
      it->second.last_task_round = task.round;
      return task;
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      task.kind = Task::Kind::kWait;
      return task;
    }
  }
}

absl::StatusOr<core::UpdateReceiver> FederatedJob::BeginUpdate(const UpdateHeader& header) {
  std::lock_guard lock(mu_);
  if (!clients_.contains(header.client_id)) {
    return absl::NotFoundError(absl::StrCat("client ", header.client_id, " has not joined job ", config_.name));
  }
  clients_[header.client_id].last_seen = core::Clock::now();
  if (absl::Status s = tracker_.CheckMayReport(header.client_id, header.round); !s.ok()) return s;
  if (header.base_model_version != model_version_) {
    return absl::FailedPreconditionError(absl::StrCat("update was trained on model version ",
                                                      header.base_model_version, ", the round's model is version ",
                                                      model_version_));
  }
  if (absl::Status s = global_->manifest().CheckSameAs(header.manifest); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("update does not match the model: ", s.message()));
  }
  if (header.num_samples == 0) return absl::InvalidArgumentError("update: num_samples must be > 0");
  if (header.chunk_bytes < 4096 || header.chunk_bytes > (3u << 20) || header.chunk_bytes % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("update: chunk_bytes must be a multiple of 4 in [4096, 3 MiB], got ", header.chunk_bytes));
  }
  const uint32_t expected_count = core::ChunkCount(global_->manifest().total_bytes(), header.chunk_bytes);
  if (header.chunk_count != expected_count) {
    return absl::InvalidArgumentError(absl::StrCat("update: chunk_count ", header.chunk_count, " does not fit ",
                                                   global_->manifest().total_bytes(), " bytes in chunks of ",
                                                   header.chunk_bytes, " (expected ", expected_count, ")"));
  }
  auto session = sessions_.find(header.client_id);
  if (session == sessions_.end()) {
    return absl::NotFoundError(
        absl::StrCat("client ", header.client_id, " has no session keys for job ", config_.name, "; join again"));
  }
  const std::filesystem::path spool =
      out_dir_ / "spool" / absl::StrCat("round-", header.round, "-", header.client_id, ".update");
  // Written over a folded update's file when one is kept: its page-cache pages exist, and
  // fresh ones are what made the spool write the slowest step of an upload here.
  aggregate_.ReuseSpoolFile(spool);
  // Opens each chunk as it arrives; the spool keeps the chunks sealed, and the codec (with
  // its own copy of the receive key) travels with the spooled update to the fold.
  return core::UpdateReceiver::Open(
      global_->manifest(), header.chunk_count, header.chunk_bytes, spool, {config_.federation.max_update_norm},
      session->second->StreamOpener(header.round, header.base_model_version, header.chunk_count));
}

absl::Status FederatedJob::CommitUpdate(const UpdateHeader& header, core::UpdateReceiver receiver) {
  absl::StatusOr<core::SpooledUpdate> update =
      receiver.Finish(static_cast<double>(header.num_samples), header.client_id);
  if (!update.ok()) {
    RejectUpdate(header, update.status());
    return update.status();
  }
  std::lock_guard lock(mu_);
  // The round may have closed while the update streamed in.
  if (absl::Status s = tracker_.CheckMayReport(header.client_id, header.round); !s.ok()) {
    std::filesystem::remove(update->path);
    return s;
  }
  const double norm = update->l2_norm;
  // Client-level DP weighs every update by its clip factor, not by its sample count.
  if (privacy_) update->weight = privacy_->Weight(norm);
  if (absl::Status s = aggregate_.Add(std::move(*update)); !s.ok()) {
    tracker_.MarkFailed(header.client_id);
    cv_.notify_all();
    return s;
  }
  tracker_.MarkReported(header.client_id);
  reports_[header.client_id] = {header.num_samples, header.metrics, norm, header.privacy_spend};
  spdlog::info("job={} round={} site={} update accepted: {} samples, train loss {:.4f}, local accuracy {:.4f}, "
               "|delta| {:.4f} ({}/{} reported)",
               config_.name, header.round, header.client_id, header.num_samples, header.metrics.train_loss,
               header.metrics.eval_accuracy, norm, tracker_.reported().size(), tracker_.selected().size());
  cv_.notify_all();
  return absl::OkStatus();
}

void FederatedJob::RejectUpdate(const UpdateHeader& header, const absl::Status& why) {
  std::lock_guard lock(mu_);
  spdlog::warn("job={} round={} site={} update rejected: {}", config_.name, header.round, header.client_id,
               std::string(why.message()));
  if (tracker_.open() && tracker_.round() == header.round) tracker_.MarkFailed(header.client_id);
  cv_.notify_all();
}

std::vector<std::string> FederatedJob::AliveClientsLocked(core::Clock::time_point now) const {
  std::vector<std::string> alive;
  for (const auto& [id, c] : clients_) {
    if (!c.lost && !c.declined && now - c.last_seen < ToMillis(config_.federation.heartbeat_timeout_s)) {
      alive.push_back(id);
    }
  }
  return alive;
}

void FederatedJob::MarkLostClientsLocked(core::Clock::time_point now) {
  for (auto& [id, c] : clients_) {
    if (!c.lost && now - c.last_seen >= ToMillis(config_.federation.heartbeat_timeout_s)) {
      c.lost = true;
      spdlog::warn("job={} site={} lost: no heartbeat for {:.1f} s", config_.name, id, Seconds(now - c.last_seen));
      if (tracker_.open() && tracker_.IsSelected(id) && !tracker_.reported().contains(id)) {
        tracker_.MarkFailed(id);
        spdlog::warn("job={} round={} site={} dropped from the round", config_.name, tracker_.round(), id);
      }
    }
  }
}

void FederatedJob::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  cv_.notify_all();
}

bool FederatedJob::finished() const {
  std::lock_guard lock(mu_);
  return state_ == "finished" || state_ == "failed" || state_ == "stopped";
}

absl::Status FederatedJob::Run() {
  {
    std::unique_lock lock(mu_);
    if (held_) {
      state_ = "held";
      spdlog::info("job={} held: waiting for an admin to start it (cohort admin start)", config_.name);
      cv_.wait(lock, [this] { return !held_ || cancelled_ || stop_requested_; });
      if (cancelled_) return absl::CancelledError("job cancelled");
      if (state_ == "held") state_ = "waiting";
    }
  }
  for (uint64_t round = completed_rounds_ + 1;; ++round) {
    const auto round_started = core::Clock::now();
    nlohmann::json changes = nlohmann::json::array();
    int attempt = 0;
    for (;;) {
      std::unique_lock lock(mu_);
      // A round boundary: queued parameter changes take effect, and a stop ends the job.
      for (auto& change : ApplyPendingChangesLocked()) changes.push_back(std::move(change));
      const core::FederationConfig& fed = config_.federation;
      // Sites that declined (their privacy budget is spent) never come back: with fewer
      // than min_clients left the job cannot run another round.
      size_t declined = 0, able = 0;
      for (const auto& [id, c] : clients_) (c.declined ? declined : able) += 1;
      const bool too_few = declined > 0 && able < static_cast<size_t>(fed.min_clients);
      if (too_few) {
        summary_["ended_early"] = absl::StrCat("after round ", round - 1, ": ", able, " sites can still train, ",
                                               fed.min_clients, " needed; ", declined, " declined");
        spdlog::warn("job={} ends early: {}", config_.name, summary_["ended_early"].get<std::string>());
      }
      if (stop_requested_ || too_few || round > static_cast<uint64_t>(fed.rounds)) {
        const bool stopped = stop_requested_ && !budget_spent_;
        summary_["status"] = stopped ? "stopped" : "finished";
        lock.unlock();
        absl::Status written = WriteOutputs();
        std::lock_guard relock(mu_);
        state_ = stopped ? "stopped" : "finished";
        if (stopped) spdlog::info("job={} stopped by an admin after round {}", config_.name, completed_rounds_);
        cv_.notify_all();
        return written;
      }
      // Wait for enough live clients to start the round.
      auto last_notice = core::Clock::time_point{};
      std::optional<core::Clock::time_point> minimum_since;
      for (;;) {
        if (cancelled_) return absl::CancelledError("job cancelled");
        if (stop_requested_) break;
        const auto now = core::Clock::now();
        MarkLostClientsLocked(now);
        // Start with a full round when the clients are there; with the minimum once no
        // further client has shown up for join_grace_s.
        const size_t alive = AliveClientsLocked(now).size();
        if (alive >= static_cast<size_t>(fed.clients_per_round)) break;
        if (alive >= static_cast<size_t>(fed.min_clients)) {
          if (!minimum_since) minimum_since = now;
          if (now - *minimum_since >= ToMillis(fed.join_grace_s)) break;
        } else {
          minimum_since.reset();
        }
        if (now - last_notice > std::chrono::seconds(10)) {
          spdlog::info("job={} round={} waiting for clients: {} live, {} needed", config_.name, round,
                       AliveClientsLocked(now).size(), fed.min_clients);
          last_notice = now;
        }
        cv_.wait_for(lock, std::chrono::milliseconds(200));
      }
      if (stop_requested_) continue;  // back to the boundary, which ends the job
      if (privacy_) {
        size_t population = 0;
        for (const auto& [id, c] : clients_) population += c.declined ? 0 : 1;
        absl::StatusOr<bool> fits = privacy_->NextRoundFits(
            config_.privacy, population, static_cast<size_t>(fed.clients_per_round), fed.rounds);
        if (!fits.ok() || !*fits) {
          const std::string why =
              fits.ok() ? absl::StrCat("the job's privacy budget (epsilon ", config_.privacy.target_epsilon,
                                       ") would be exceeded by round ", round, "; spent ", privacy_->epsilon_spent())
                        : std::string(fits.status().message());
          spdlog::warn("job={} ends before round {}: {}", config_.name, round, why);
          summary_["ended_early"] = why;
          if (!fits.ok()) {
            state_ = "failed";
            failure_ = why;
            summary_["status"] = "failed";
            summary_["failure"] = why;
            cv_.notify_all();
            lock.unlock();
            (void)WriteOutputs();
            return fits.status();
          }
          stop_requested_ = true;  // the boundary ends the job as "finished" below
          budget_spent_ = true;
          continue;
        }
      }
      state_ = "running";
      const auto now = core::Clock::now();
      std::vector<std::string> selected = core::SelectClients(
          AliveClientsLocked(now), static_cast<size_t>(fed.clients_per_round), config_.seed, round, attempt);
      aggregate_.Reset();
      reports_.clear();
      tracker_.SetLimits(static_cast<size_t>(fed.min_clients), ToMillis(fed.round_timeout_s));
      tracker_.Open(round, selected, now);
      spdlog::info("job={} round={}/{} started{}: selected {}", config_.name, round, fed.rounds,
                   attempt > 0 ? absl::StrCat(" (retry ", attempt, ")") : "", absl::StrJoin(selected, ", "));
      cv_.notify_all();

      core::RoundTracker::Decision decision = core::RoundTracker::Decision::kWait;
      while (decision == core::RoundTracker::Decision::kWait) {
        if (cancelled_) return absl::CancelledError("job cancelled");
        cv_.wait_for(lock, std::chrono::milliseconds(200));
        MarkLostClientsLocked(core::Clock::now());
        decision = tracker_.Decide(core::Clock::now());
      }
      const std::string why = tracker_.Explain(core::Clock::now());
      tracker_.CloseRound();
      cv_.notify_all();
      if (decision == core::RoundTracker::Decision::kClose) {
        spdlog::info("job={} round={} closing: {}", config_.name, round, why);
        round_changes_ = std::move(changes);
        lock.unlock();
        if (absl::Status s = CloseRound(round, attempt + 1, round_started); !s.ok()) {
          std::lock_guard relock(mu_);
          state_ = "failed";
          failure_ = std::string(s.message());
          cv_.notify_all();
          return s;
        }
        break;
      }
      ++attempt;
      if (attempt <= fed.max_round_retries) {
        spdlog::warn("job={} round={} will be retried ({} of {}): {}", config_.name, round, attempt,
                     fed.max_round_retries, why);
      } else {
        state_ = "failed";
        failure_ = absl::StrCat("round ", round, " failed ", attempt, " times: ", why);
        summary_["status"] = "failed";
        summary_["failure"] = failure_;
        cv_.notify_all();
        lock.unlock();
        (void)WriteOutputs();
        return absl::AbortedError(failure_);
      }
    }
  }
}

absl::Status FederatedJob::CloseRound(uint64_t round, int attempts, core::Clock::time_point started) {
  // Only this thread changes the global model and the aggregate once the round is closed.
  auto next = std::make_shared<core::ParameterSet>(*global_);
  if (absl::Status s = aggregate_.ApplyTo(*next); !s.ok()) return s;
  nlohmann::json privacy_report;
  if (privacy_) {
    std::vector<double> norms;
    size_t per_round = 0;
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, r] : reports_) norms.push_back(r.update_norm);
      per_round = static_cast<size_t>(config_.federation.clients_per_round);
    }
    absl::StatusOr<nlohmann::json> report = privacy_->PrivatizeRound(*global_, *next, norms, per_round);
    if (!report.ok()) return report.status();
    privacy_report = std::move(*report);
  }
  std::optional<core::EvalMetrics> test;
  if (evaluate_) {
    absl::StatusOr<core::EvalMetrics> m = evaluate_(*next);
    if (!m.ok()) return m.status();
    test = *m;
  }
  const std::span<const std::byte> model_bytes = next->bytes();
  const std::string model_sha256 =
      audit_ != nullptr
          ? audit::Sha256Hex(std::string_view(reinterpret_cast<const char*>(model_bytes.data()), model_bytes.size()))
          : "";
  std::lock_guard lock(mu_);
  std::vector<std::string> contributors;
  for (const auto& [id, r] : reports_) contributors.push_back(id);
  // The new model version is on record before any client can download it.
  absl::StatusOr<uint64_t> published =
      RecordLocked(launched_by_, audit::action::kModelPublish, "", "", model_version_,
                   {{"model_version", model_version_ + 1}, {"round", round}, {"sha256", model_sha256},
                    {"contributors", contributors}},
                   "");
  if (!published.ok()) return published.status();
  if (!privacy_report.is_null()) {
    absl::StatusOr<uint64_t> spent =
        RecordLocked(launched_by_, audit::action::kPrivacySpend, "", "", nullptr, privacy_report, "");
    if (!spent.ok()) return spent.status();
  }
  global_ = next;
  ++model_version_;
  completed_rounds_ = round;

  nlohmann::json clients = nlohmann::json::array();
  uint64_t samples = 0;
  double train_loss = 0, local_eval_accuracy = 0;
  for (const auto& [id, r] : reports_) {
    samples += r.samples;
    train_loss += r.metrics.train_loss * static_cast<double>(r.samples);
    local_eval_accuracy += r.metrics.eval_accuracy * static_cast<double>(r.samples);
    clients.push_back({{"site", id},
                       {"samples", r.samples},
                       {"train_loss", r.metrics.train_loss},
                       {"eval_loss", r.metrics.eval_loss},
                       {"eval_accuracy", r.metrics.eval_accuracy},
                       {"train_seconds", r.metrics.train_seconds},
                       {"steps", r.metrics.steps},
                       {"update_norm", r.update_norm}});
    if (r.spend) clients.back()["privacy"] = MirrorSpendLocked(id, round, *r.spend);
  }
  nlohmann::json entry = {{"round", round},
                          {"attempts", attempts},
                          {"model_version", model_version_},
                          {"clients_reported", reports_.size()},
                          {"clients", clients},
                          {"samples", samples},
                          {"train_loss", samples ? train_loss / static_cast<double>(samples) : 0.0},
                          {"client_eval_accuracy", samples ? local_eval_accuracy / static_cast<double>(samples) : 0.0},
                          {"wall_seconds", Seconds(core::Clock::now() - started)},
                          {"training", {{"optimizer", config_.training.optimizer},
                                        {"learning_rate", config_.training.learning_rate},
                                        {"local_epochs", config_.training.local_epochs},
                                        {"batch_size", config_.training.batch_size}}},
                          {"parameter_changes", round_changes_}};
  if (!model_sha256.empty()) entry["model_sha256"] = model_sha256;
  if (!privacy_report.is_null()) entry["privacy"] = privacy_report;
  if (test) {
    entry["test_loss"] = test->loss;
    entry["test_accuracy"] = test->accuracy;
    entry["test_samples"] = test->samples;
  }
  summary_["rounds"].push_back(entry);
  if (absl::Status s =
          core::WriteCheckpoint(out_dir_ / kCheckpointFile, config_.name, round, model_version_, summary_, *global_);
      !s.ok()) {
    return s;
  }
  // Logged once durable: a round reported done survives a crash.
  spdlog::info("job={} round={}/{} done: {} clients, {} samples, train loss {:.4f}{}, {:.1f} s", config_.name, round,
               config_.federation.rounds, reports_.size(), samples, entry["train_loss"].get<double>(),
               test ? fmt::format(", test loss {:.4f}, test accuracy {:.4f}", test->loss, test->accuracy) : "",
               entry["wall_seconds"].get<double>());

  return absl::OkStatus();
}

absl::Status FederatedJob::WriteOutputs() {
  std::shared_ptr<const core::ParameterSet> model;
  nlohmann::json summary;
  {
    std::lock_guard lock(mu_);
    model = global_;
    summary = summary_;
  }
  if (write_model_) {
    if (absl::Status s = write_model_(*model, out_dir_ / "model.pt"); !s.ok()) return s;
  }
  if (absl::Status s = core::WriteFileAtomically(out_dir_ / "model.json", config_.model_config.dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  summary["config"] = core::ToJson(config_);
  return core::WriteFileAtomically(out_dir_ / "summary.json", summary.dump(2) + "\n");
}

nlohmann::json FederatedJob::Status() const {
  std::lock_guard lock(mu_);
  const auto now = core::Clock::now();
  nlohmann::json clients = nlohmann::json::array();
  for (const auto& [id, c] : clients_) {
    std::string state = c.lost ? "lost" : "idle";
    if (!c.lost && tracker_.open() && tracker_.IsSelected(id)) {
      state = tracker_.reported().contains(id) ? "reported" : tracker_.failed().contains(id) ? "failed" : "training";
    }
    clients.push_back({{"client_id", id},
                       {"state", state},
                       {"num_samples", c.num_samples},
                       {"last_seen_ms_ago", std::chrono::duration_cast<std::chrono::milliseconds>(now - c.last_seen).count()}});
  }
  nlohmann::json pending = nlohmann::json::array();
  for (const PendingChange& c : pending_changes_) {
    pending.push_back({{"parameter", c.parameter}, {"old", c.old_value}, {"new", c.new_value}, {"by", c.actor.identity}});
  }
  return {{"job_id", config_.name},
          {"state", state_},
          {"audit_head", audit_ != nullptr ? audit_->head_hash() : ""},
          {"audit_entries", audit_ != nullptr ? audit_->entry_count() : 0},
          {"pending_changes", pending},
          {"round", tracker_.open() ? tracker_.round() : completed_rounds_},
          {"completed_rounds", completed_rounds_},
          {"total_rounds", config_.federation.rounds},
          {"model_version", model_version_},
          {"clients", clients},
          {"summary", summary_}};
}

// --- administration ---

nlohmann::json FederatedJob::MirrorSpendLocked(const std::string& site, uint64_t round, const SiteSpend& spend) {
  nlohmann::json report = {{"mechanism", "dp_sgd"},
                           {"epsilon", spend.epsilon_after},
                           {"noise_multiplier", spend.noise_multiplier},
                           {"sampling_rate", spend.sampling_rate},
                           {"steps", spend.steps},
                           {"clip_norm", spend.clip_norm}};
  auto it = mirrors_.find(site);
  if (it == mirrors_.end()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir_ / "ledgers", ec);
    absl::StatusOr<std::unique_ptr<privacy::Ledger>> ledger =
        privacy::Ledger::Open((out_dir_ / "ledgers" / (site + ".ledger")).string(), site,
                              {config_.privacy.target_epsilon, config_.privacy.target_delta});
    if (!ledger.ok()) {
      spdlog::error("job={} site={} cannot open the mirror ledger: {}", config_.name, site,
                    std::string(ledger.status().message()));
      report["mirror_error"] = std::string(ledger.status().message());
      return report;
    }
    it = mirrors_.emplace(site, std::move(*ledger)).first;
  }
  privacy::SpendRequest request;
  request.job = config_.name;
  request.round = static_cast<int64_t>(round);
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = spend.sampling_rate;
  request.noise_multiplier = spend.noise_multiplier;
  request.steps = spend.steps;
  request.clip_norm = spend.clip_norm;
  absl::StatusOr<privacy::SpendCheck> mirrored = it->second->RecordSpend(request);
  if (!mirrored.ok()) {
    spdlog::error("job={} round={} site={} spend not mirrored: {}", config_.name, round, site,
                  std::string(mirrored.status().message()));
    report["mirror_error"] = std::string(mirrored.status().message());
  } else {
    report["job_epsilon"] = mirrored->epsilon_after;
  }
  (void)RecordLocked({site, "site"}, audit::action::kPrivacySpend, "", site, nullptr, report, "");
  return report;
}

absl::StatusOr<uint64_t> FederatedJob::RecordLocked(const Actor& actor, const std::string& action,
                                                    const std::string& parameter, const std::string& participant,
                                                    nlohmann::json old_value, nlohmann::json new_value,
                                                    const std::string& reason) {
  if (audit_ == nullptr) return 0;
  audit::Record record;
  record.actor = actor.identity.empty() ? "unknown" : actor.identity;
  record.role = actor.role.empty() ? "unknown" : actor.role;
  record.action = action;
  record.target = {.job = config_.name, .parameter = parameter, .participant = participant};
  record.old_value = std::move(old_value);
  record.new_value = std::move(new_value);
  if (!reason.empty()) record.reason = reason;
  absl::StatusOr<uint64_t> seq = audit_->Append(record);
  if (!seq.ok()) {
    spdlog::error("job={} audit log {}: cannot record {}: {}", config_.name, audit_->path().string(), action,
                  std::string(seq.status().message()));
    return absl::UnavailableError(absl::StrCat("the audit log cannot record this change (", seq.status().message(),
                                               "); nothing was changed"));
  }
  return seq;
}

absl::Status FederatedJob::PersistEffectiveConfigLocked() {
  return core::WriteFileAtomically(out_dir_ / kEffectiveConfigFile, core::ToJson(config_).dump(2) + "\n");
}

nlohmann::json FederatedJob::ConfigAtNextBoundaryLocked() const {
  nlohmann::json candidate = core::ToJson(config_);
  for (const PendingChange& change : pending_changes_) {
    const size_t dot = change.parameter.find('.');
    candidate[change.parameter.substr(0, dot)][change.parameter.substr(dot + 1)] = change.new_value;
  }
  return candidate;
}

nlohmann::json FederatedJob::ApplyPendingChangesLocked() {
  nlohmann::json applied = nlohmann::json::array();
  if (pending_changes_.empty()) return applied;
  absl::StatusOr<core::JobConfig> next = core::ParseJobConfig(ConfigAtNextBoundaryLocked());
  if (!next.ok()) {
    // Each change was checked on its own when it was queued; together they still parse
    // unless two of them conflict (min_clients above clients_per_round, say).
    spdlog::error("job={} queued parameter changes conflict and were dropped: {}", config_.name,
                  std::string(next.status().message()));
    for (const PendingChange& change : pending_changes_) {
      (void)RecordLocked(change.actor, audit::action::kParamSetRefused, change.parameter, "", change.old_value,
                         change.new_value, absl::StrCat("dropped at the round boundary: ", next.status().message()));
    }
    pending_changes_.clear();
    return applied;
  }
  // Only the settable sections are replaced: RPC handlers read the fixed parts (name,
  // model, chunk size) without the lock.
  config_.training = next->training;
  core::FederationConfig& f = config_.federation;
  const core::FederationConfig& n = next->federation;
  f.rounds = n.rounds;
  f.clients_per_round = n.clients_per_round;
  f.min_clients = n.min_clients;
  f.round_timeout_s = n.round_timeout_s;
  f.join_grace_s = n.join_grace_s;
  f.max_round_retries = n.max_round_retries;
  f.max_update_norm = n.max_update_norm;
  f.strategy = n.strategy;
  config_.privacy.noise_multiplier = next->privacy.noise_multiplier;
  config_.privacy.clip_norm = next->privacy.clip_norm;
  for (const PendingChange& change : pending_changes_) {
    spdlog::info("job={} {} changed from {} to {} by {} ({})", config_.name, change.parameter, change.old_value.dump(),
                 change.new_value.dump(), change.actor.identity, change.actor.role);
    applied.push_back({{"parameter", change.parameter},
                       {"old", change.old_value},
                       {"new", change.new_value},
                       {"by", change.actor.identity},
                       {"role", change.actor.role}});
  }
  pending_changes_.clear();
  if (absl::Status s = PersistEffectiveConfigLocked(); !s.ok()) {
    spdlog::error("job={} cannot save the changed parameters: {}", config_.name, std::string(s.message()));
  }
  return applied;
}

absl::Status FederatedJob::Start(const Actor& actor) {
  std::lock_guard lock(mu_);
  if (!held_) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", config_.name, " is not waiting to be started (state ", state_, ")"));
  }
  absl::StatusOr<uint64_t> seq = RecordLocked(actor, "job.start", "", "", "held", "started", "");
  if (!seq.ok()) return seq.status();
  held_ = false;
  spdlog::info("job={} started by {} ({})", config_.name, actor.identity, actor.role);
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status FederatedJob::Stop(const Actor& actor, const std::string& reason) {
  std::lock_guard lock(mu_);
  if (state_ == "finished" || state_ == "failed" || state_ == "stopped") {
    return absl::FailedPreconditionError(absl::StrCat("job ", config_.name, " has already ended (", state_, ")"));
  }
  if (stop_requested_) return absl::OkStatus();
  absl::StatusOr<uint64_t> seq = RecordLocked(actor, "job.stop", "", "", state_, "stopped", reason);
  if (!seq.ok()) return seq.status();
  stop_requested_ = true;
  spdlog::info("job={} stop requested by {} ({}){}: it ends at the next round boundary", config_.name,
               actor.identity, actor.role, reason.empty() ? "" : ": " + reason);
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<ParameterChange> FederatedJob::SetParameter(const Actor& actor, const std::string& parameter,
                                                           const nlohmann::json& value, const std::string& reason) {
  std::lock_guard lock(mu_);
  std::string key = parameter;
  auto refuse = [&](absl::Status why) -> absl::Status {
    spdlog::warn("job={} set {} = {} by {} refused: {}", config_.name, parameter, value.dump(), actor.identity,
                 std::string(why.message()));
    (void)RecordLocked(actor, audit::action::kParamSetRefused, key, "", nullptr, value, std::string(why.message()));
    return why;
  };
  if (state_ == "finished" || state_ == "failed" || state_ == "stopped" || stop_requested_) {
    return refuse(absl::FailedPreconditionError(
        absl::StrCat("job ", config_.name, " is ending or has ended (", state_, "); nothing to change")));
  }
  nlohmann::json candidate = ConfigAtNextBoundaryLocked();
  std::string section, name;
  if (const size_t dot = key.find('.'); dot != std::string::npos) {
    section = key.substr(0, dot);
    name = key.substr(dot + 1);
  } else {
    for (const char* s : kSettableSections) {
      if (candidate.contains(s) && candidate[s].is_object() && candidate[s].contains(key)) {
        section = s;
        name = key;
        break;
      }
    }
  }
  std::vector<std::string> settable;
  for (const char* s : kSettableSections) {
    if (!candidate.contains(s) || !candidate[s].is_object()) continue;
    for (const auto& [k, v] : candidate[s].items()) {
      if (Settable(s, k)) settable.push_back(absl::StrCat(s, ".", k));
    }
  }
  if (section.empty() || !candidate.contains(section) || !candidate[section].is_object() ||
      !candidate[section].contains(name)) {
    return refuse(absl::InvalidArgumentError(absl::StrCat("unknown parameter \"", parameter,
                                                          "\"; parameters that can change while a job runs: ",
                                                          absl::StrJoin(settable, ", "))));
  }
  key = absl::StrCat(section, ".", name);
  if (!Settable(section, name)) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat(key, " is fixed for the life of a job; parameters that can change while it runs: ",
                     absl::StrJoin(settable, ", "))));
  }
  nlohmann::json old_value = candidate[section][name];
  candidate[section][name] = value;
  absl::StatusOr<core::JobConfig> next = core::ParseJobConfig(candidate);
  if (!next.ok()) return refuse(absl::InvalidArgumentError(std::string(next.status().message())));
  const uint64_t current_round = tracker_.open() ? tracker_.round() : completed_rounds_;
  if (key == "federation.rounds" && static_cast<uint64_t>(next->federation.rounds) < std::max<uint64_t>(current_round, 1)) {
    return refuse(absl::InvalidArgumentError(absl::StrCat("federation.rounds: expected >= ", current_round,
                                                          " (rounds already run or running), got ", value.dump())));
  }
  absl::StatusOr<uint64_t> seq = RecordLocked(actor, audit::action::kParamSet, key, "", old_value, value, reason);
  if (!seq.ok()) return seq.status();
  pending_changes_.push_back({key, old_value, value, actor});
  ParameterChange change{key, old_value, value, current_round + 1, *seq};
  spdlog::info("job={} {} = {} (was {}) set by {} ({}); applies from round {}", config_.name, key, value.dump(),
               old_value.dump(), actor.identity, actor.role, change.applies_at_round);
  return change;
}

absl::Status FederatedJob::CheckParticipant(const std::string& site) const {
  std::lock_guard lock(mu_);
  const core::FederationConfig& f = config_.federation;
  if (std::find(f.revoked_sites.begin(), f.revoked_sites.end(), site) != f.revoked_sites.end()) {
    return absl::PermissionDeniedError(absl::StrCat("site ", site, " was revoked from job ", config_.name));
  }
  if (!f.sites.empty() && std::find(f.sites.begin(), f.sites.end(), site) == f.sites.end()) {
    return absl::PermissionDeniedError(absl::StrCat("site ", site, " is not enrolled in job ", config_.name,
                                                    "; an admin can add it (cohort admin participants add)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FederatedJob::AddParticipant(const Actor& actor, const std::string& site,
                                                      const std::string& reason) {
  std::lock_guard lock(mu_);
  if (site.empty() || site.size() > 128 || site.find_first_of("/\\ \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("site: expected a name of 1-128 characters without spaces or slashes, got \"", site, "\""));
  }
  core::FederationConfig& f = config_.federation;
  const bool revoked = std::find(f.revoked_sites.begin(), f.revoked_sites.end(), site) != f.revoked_sites.end();
  if (revoked) {
    return absl::FailedPreconditionError(
        absl::StrCat("site ", site, " was revoked from job ", config_.name, "; a revoked site cannot rejoin the job"));
  }
  if (f.sites.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("job ", config_.name,
                                                      " has open enrollment (federation.sites is empty): every site "
                                                      "of the federation may already join"));
  }
  if (std::find(f.sites.begin(), f.sites.end(), site) != f.sites.end()) {
    return absl::AlreadyExistsError(absl::StrCat("site ", site, " is already enrolled in job ", config_.name));
  }
  absl::StatusOr<uint64_t> seq =
      RecordLocked(actor, audit::action::kParticipantAdd, "", site, nullptr, "enrolled", reason);
  if (!seq.ok()) return seq.status();
  f.sites.push_back(site);
  if (absl::Status s = PersistEffectiveConfigLocked(); !s.ok()) return s;
  spdlog::info("job={} site={} enrolled by {} ({})", config_.name, site, actor.identity, actor.role);
  return seq;
}

absl::StatusOr<uint64_t> FederatedJob::RevokeParticipant(const Actor& actor, const std::string& site,
                                                         const std::string& reason) {
  std::lock_guard lock(mu_);
  core::FederationConfig& f = config_.federation;
  if (std::find(f.revoked_sites.begin(), f.revoked_sites.end(), site) != f.revoked_sites.end()) {
    return absl::AlreadyExistsError(absl::StrCat("site ", site, " is already revoked from job ", config_.name));
  }
  const bool known = clients_.contains(site) || std::find(f.sites.begin(), f.sites.end(), site) != f.sites.end();
  if (!known) {
    return absl::NotFoundError(absl::StrCat("site ", site, " has neither joined nor been enrolled in job ",
                                            config_.name));
  }
  absl::StatusOr<uint64_t> seq =
      RecordLocked(actor, audit::action::kParticipantRevoke, "", site, "enrolled", "revoked", reason);
  if (!seq.ok()) return seq.status();
  f.revoked_sites.push_back(site);
  std::erase(f.sites, site);
  sessions_.erase(site);  // its keys open nothing from now on
  if (auto it = clients_.find(site); it != clients_.end()) {
    it->second.lost = true;
    if (tracker_.open() && tracker_.IsSelected(site) && !tracker_.reported().contains(site)) {
      tracker_.MarkFailed(site);
    }
  }
  if (absl::Status s = PersistEffectiveConfigLocked(); !s.ok()) return s;
  spdlog::warn("job={} site={} revoked by {} ({}){}", config_.name, site, actor.identity, actor.role,
               reason.empty() ? "" : ": " + reason);
  cv_.notify_all();
  return seq;
}

absl::Status FederatedJob::Decline(const std::string& client_id, uint64_t round, const std::string& reason) {
  std::lock_guard lock(mu_);
  auto it = clients_.find(client_id);
  if (it == clients_.end()) {
    return absl::NotFoundError(absl::StrCat("client ", client_id, " has not joined job ", config_.name));
  }
  if (it->second.declined) return absl::OkStatus();
  absl::StatusOr<uint64_t> seq =
      RecordLocked({client_id, "site"}, "participant.decline", "", client_id, "active", "declined", reason);
  if (!seq.ok()) return seq.status();
  it->second.declined = true;
  if (tracker_.open() && tracker_.round() == round && tracker_.IsSelected(client_id) &&
      !tracker_.reported().contains(client_id)) {
    tracker_.MarkFailed(client_id);
  }
  declines_[client_id] = reason;
  spdlog::warn("job={} round={} site={} declined and leaves the job: {}", config_.name, round, client_id, reason);
  cv_.notify_all();
  return absl::OkStatus();
}

void FederatedJob::RecordDenied(const Actor& actor, const std::string& method, const std::string& reason) {
  std::lock_guard lock(mu_);
  (void)RecordLocked(actor, audit::action::kAccessDenied, method, "", nullptr, nullptr, reason);
}

nlohmann::json FederatedJob::Participants() const {
  std::lock_guard lock(mu_);
  const auto now = core::Clock::now();
  const core::FederationConfig& f = config_.federation;
  std::map<std::string, nlohmann::json> out;
  for (const std::string& site : f.sites) {
    out[site] = {{"site", site}, {"state", "enrolled"}, {"num_samples", 0}, {"last_seen_ms_ago", -1}};
  }
  for (const auto& [id, c] : clients_) {
    std::string state = c.lost ? "lost" : "joined";
    if (!c.lost && tracker_.open() && tracker_.IsSelected(id)) {
      state = tracker_.reported().contains(id) ? "reported" : tracker_.failed().contains(id) ? "failed" : "training";
    }
    out[id] = {{"site", id},
               {"state", state},
               {"num_samples", c.num_samples},
               {"last_seen_ms_ago", std::chrono::duration_cast<std::chrono::milliseconds>(now - c.last_seen).count()}};
  }
  for (const std::string& site : f.revoked_sites) {
    nlohmann::json& p = out[site];
    if (p.is_null()) p = {{"site", site}, {"num_samples", 0}, {"last_seen_ms_ago", -1}};
    p["state"] = "revoked";
  }
  nlohmann::json list = nlohmann::json::array();
  for (auto& [site, p] : out) list.push_back(std::move(p));
  return {{"participants", list}, {"open_enrollment", f.sites.empty()}};
}

}  // namespace cohort::server
