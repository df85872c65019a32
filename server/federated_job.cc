#include "server/federated_job.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/atomic_file.h"
#include "core/checkpoint.h"

namespace cohort::server {
namespace {

constexpr const char* kCheckpointFile = "checkpoint.bin";

double Seconds(core::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::chrono::milliseconds ToMillis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

FederatedJob::FederatedJob(JobOptions options)
    : config_(std::move(options.config)),
      out_dir_(std::move(options.out_dir)),
      evaluate_(std::move(options.evaluate)),
      write_model_(std::move(options.write_model)),
      global_(std::make_shared<const core::ParameterSet>(std::move(options.initial_model))),
      tracker_(static_cast<size_t>(config_.federation.min_clients), ToMillis(config_.federation.round_timeout_s)),
      aggregate_(global_->manifest(), /*threads=*/2) {
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
  }
  std::unique_ptr<FederatedJob> job(new FederatedJob(std::move(options)));
  if (resumed) {
    job->completed_rounds_ = resumed->round;
    job->model_version_ = resumed->model_version;
    if (resumed->summary.is_object() && resumed->summary.contains("rounds")) job->summary_ = resumed->summary;
    spdlog::info("job={} resuming after round {} from {}", job->config_.name, resumed->round,
                 checkpoint_path.string());
  }
  return job;
}

absl::StatusOr<std::string> FederatedJob::Join(const std::string& site, uint64_t num_samples) {
  if (site.empty() || site.size() > 128 || site.find_first_of("/\\ \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("site: expected a name of 1-128 characters without spaces or slashes, got \"", site, "\""));
  }
  std::lock_guard lock(mu_);
  Client& client = clients_[site];
  const bool rejoin = client.last_seen != core::Clock::time_point{};
  client.num_samples = num_samples;
  client.last_seen = core::Clock::now();
  client.lost = false;
  spdlog::info("job={} site={} {} with {} samples ({} clients known)", config_.name, site,
               rejoin ? "re-joined" : "joined", num_samples, clients_.size());
  cv_.notify_all();
  return site;
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
    if (state_ == "finished" || state_ == "failed") {
      task.kind = Task::Kind::kDone;
      task.message = state_ == "finished" ? "job finished" : absl::StrCat("job failed: ", failure_);
      return task;
    }
    if (tracker_.open() && tracker_.CheckMayReport(client_id, tracker_.round()).ok()) {
      task.kind = Task::Kind::kTrain;
      task.round = tracker_.round();
      task.model_version = model_version_;
      task.training_config_json = core::ToJson(config_.training).dump();
      task.model = global_;
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
  const std::filesystem::path spool =
      out_dir_ / "spool" / absl::StrCat("round-", header.round, "-", header.client_id, ".update");
  return core::UpdateReceiver::Open(global_->manifest(), header.chunk_count, header.chunk_bytes, spool,
                                    {config_.federation.max_update_norm});
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
  if (absl::Status s = aggregate_.Add(std::move(*update)); !s.ok()) {
    tracker_.MarkFailed(header.client_id);
    cv_.notify_all();
    return s;
  }
  tracker_.MarkReported(header.client_id);
  reports_[header.client_id] = {header.num_samples, header.metrics, norm};
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
    if (!c.lost && now - c.last_seen < ToMillis(config_.federation.heartbeat_timeout_s)) alive.push_back(id);
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
  return state_ == "finished" || state_ == "failed";
}

absl::Status FederatedJob::Run() {
  const core::FederationConfig& fed = config_.federation;
  for (uint64_t round = completed_rounds_ + 1; round <= static_cast<uint64_t>(fed.rounds); ++round) {
    const auto round_started = core::Clock::now();
    int attempt = 0;
    for (;;) {
      std::unique_lock lock(mu_);
      // Wait for enough live clients to start the round.
      auto last_notice = core::Clock::time_point{};
      std::optional<core::Clock::time_point> minimum_since;
      for (;;) {
        if (cancelled_) return absl::CancelledError("job cancelled");
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
      state_ = "running";
      const auto now = core::Clock::now();
      std::vector<std::string> selected = core::SelectClients(
          AliveClientsLocked(now), static_cast<size_t>(fed.clients_per_round), config_.seed, round, attempt);
      aggregate_.Reset();
      reports_.clear();
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
      spdlog::warn("job={} round={} will be retried ({} of {}): {}", config_.name, round, attempt,
                   fed.max_round_retries, why);
      if (attempt > fed.max_round_retries) {
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
  {
    std::lock_guard lock(mu_);
    summary_["status"] = "finished";
  }
  absl::Status written = WriteOutputs();
  std::lock_guard lock(mu_);
  state_ = "finished";
  cv_.notify_all();
  return written;
}

absl::Status FederatedJob::CloseRound(uint64_t round, int attempts, core::Clock::time_point started) {
  // Only this thread changes the global model and the aggregate once the round is closed.
  auto next = std::make_shared<core::ParameterSet>(*global_);
  if (absl::Status s = aggregate_.ApplyTo(*next); !s.ok()) return s;
  std::optional<core::EvalMetrics> test;
  if (evaluate_) {
    absl::StatusOr<core::EvalMetrics> m = evaluate_(*next);
    if (!m.ok()) return m.status();
    test = *m;
  }
  std::lock_guard lock(mu_);
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
  }
  nlohmann::json entry = {{"round", round},
                          {"attempts", attempts},
                          {"model_version", model_version_},
                          {"clients_reported", reports_.size()},
                          {"clients", clients},
                          {"samples", samples},
                          {"train_loss", samples ? train_loss / static_cast<double>(samples) : 0.0},
                          {"client_eval_accuracy", samples ? local_eval_accuracy / static_cast<double>(samples) : 0.0},
                          {"wall_seconds", Seconds(core::Clock::now() - started)}};
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
  return {{"job_id", config_.name},
          {"state", state_},
          {"round", tracker_.open() ? tracker_.round() : completed_rounds_},
          {"completed_rounds", completed_rounds_},
          {"total_rounds", config_.federation.rounds},
          {"model_version", model_version_},
          {"clients", clients},
          {"summary", summary_}};
}

}  // namespace cohort::server
