#include "server/federated_job.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "audit/entry.h"
#include "core/checkpoint.h"
#include "core/limits.h"
#include "server/checkpoint_key.h"
#include "server/round_driver.h"
#include "server/runtime_parameters.h"
#include "storage/atomic_write.h"

namespace cohort::server {
namespace {

constexpr const char* kCheckpointFile = "checkpoint.bin";
constexpr const char* kJobDatabaseFile = "job.db";

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

// A server killed while it wrote a checkpoint leaves the temporary file of that write
// (storage::WriteFileAtomically never renamed it), a model's size each time: the checkpoint
// it was to replace is still whole, so the leftover is only ever garbage.
void RemoveTornCheckpoints(const std::filesystem::path& out_dir) {
  const std::string prefix = storage::TemporaryNamePrefix(out_dir / kCheckpointFile);
  std::error_code ec;
  size_t removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir, ec)) {
    if (entry.path().filename().string().starts_with(prefix) && entry.is_regular_file(ec) &&
        std::filesystem::remove(entry.path(), ec)) {
      ++removed;
    }
  }
  if (removed > 0) spdlog::info("removed {} checkpoint write(s) cut short by an earlier run in {}", removed, out_dir.string());
}

// Replays OUT/job.db over the job file: the parameter changes and the enrollment made
// while an earlier server process ran stay in force.
absl::Status ReplayStore(JobStore& store, core::JobConfig& config) {
  absl::StatusOr<std::vector<JobStore::ParameterChangeRow>> rows = store.ParameterChanges();
  if (!rows.ok()) return rows.status();
  std::vector<ParameterValue> changes;
  for (JobStore::ParameterChangeRow& row : *rows) changes.push_back({row.parameter, std::move(row.value)});
  absl::StatusOr<core::JobConfig> changed = WithChanges(config, changes);
  if (!changed.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(store.path().string(),
                                                      ": the parameter changes it holds do not fit this job file: ",
                                                      changed.status().message()));
  }
  config = std::move(*changed);
  absl::StatusOr<std::vector<JobStore::ParticipantRow>> participants = store.Participants();
  if (!participants.ok()) return participants.status();
  core::FederationConfig& f = config.federation;
  for (const JobStore::ParticipantRow& p : *participants) {
    if (p.state == "revoked") {
      std::erase(f.sites, p.site);
      if (std::find(f.revoked_sites.begin(), f.revoked_sites.end(), p.site) == f.revoked_sites.end()) {
        f.revoked_sites.push_back(p.site);
      }
    } else if (std::find(f.sites.begin(), f.sites.end(), p.site) == f.sites.end()) {
      f.sites.push_back(p.site);
    }
  }
  if (!changes.empty() || !participants->empty()) {
    spdlog::info("job={} {} parameter change(s) and {} enrollment record(s) restored from {}", config.name,
                 changes.size(), participants->size(), store.path().string());
  }
  return absl::OkStatus();
}

}  // namespace

FederatedJob::FederatedJob(JobOptions options, ParticipantRegistry registry, std::unique_ptr<JobStore> store,
                           std::unique_ptr<AggregationStrategy> strategy, nlohmann::json summary)
    : core_(std::move(options.config),
            std::make_shared<const core::ParameterSet>(std::move(options.initial_model)), std::move(registry)),
      out_dir_(std::move(options.out_dir)),
      evaluate_(std::move(options.evaluate)),
      write_model_(std::move(options.write_model)),
      launched_by_(std::move(options.launched_by)),
      ledger_anchors_(options.ledger_anchors),
      store_(std::move(store)),
      strategy_(std::move(strategy)),
      recorder_(std::make_unique<RoundRecorder>(RoundRecorder::Options{core_.config.name, out_dir_, options.audit,
                                                                       launched_by_, core_.config.privacy,
                                                                       options.ledger_anchors,
                                                                       *options.checkpoint_key, options.after_checkpoint,
                                                                       options.on_round_recorded},
                                                std::move(summary))) {
  core_.held = options.hold;
}

FederatedJob::~FederatedJob() = default;

absl::StatusOr<std::unique_ptr<FederatedJob>> FederatedJob::Create(JobOptions options) {
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir / "spool", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create output directory ", options.out_dir.string(), ": ", ec.message()));
  }
  if (!options.checkpoint_key) {
    absl::StatusOr<core::CheckpointKey> key = LoadOrCreateCheckpointKeyFile(options.out_dir / "checkpoint.key");
    if (!key.ok()) return key.status();
    options.checkpoint_key = *key;
  }
  const std::filesystem::path checkpoint_path = options.out_dir / kCheckpointFile;
  std::optional<core::Checkpoint> resumed;
  if (std::filesystem::exists(checkpoint_path)) {
    absl::StatusOr<core::Checkpoint> checkpoint = core::ReadCheckpoint(checkpoint_path, *options.checkpoint_key);
    if (!checkpoint.ok()) return checkpoint.status();
    if (checkpoint->round > static_cast<uint64_t>(options.config.federation.rounds)) {
      return absl::FailedPreconditionError(absl::StrCat(
          checkpoint_path.string(), " is after round ", checkpoint->round, " but the job has ",
          options.config.federation.rounds, " rounds; use another --out directory or the job file it was run with"));
    }
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
  // Runtime changes made before a restart stay in force, checkpoint or not.
  const std::filesystem::path database = options.out_dir / kJobDatabaseFile;
  const bool new_job = !resumed && !std::filesystem::exists(database);
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(database, options.config.name);
  if (!store.ok()) return store.status();
  if (absl::Status s = ReplayStore(**store, options.config); !s.ok()) return s;
  // job.db records every round after its checkpoint: a checkpoint behind it is an older
  // (authentic) one put back, which would train rounds again and publish their versions twice.
  if (absl::StatusOr<uint64_t> last = (*store)->LastRound(); resumed && last.ok() && *last > resumed->round) {
    return absl::FailedPreconditionError(absl::StrCat(
        checkpoint_path.string(), " holds round ", resumed->round, " but ", database.string(), " records round ",
        *last, " as completed: the checkpoint was replaced by an older one; restore the newest checkpoint"));
  }
  const core::FederationConfig& f = options.config.federation;
  for (const auto* list : {&f.sites, &f.revoked_sites}) {
    for (const std::string& site : *list) {
      if (absl::Status s = ParticipantRegistry::CheckName(site); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("federation.sites: ", s.message()));
      }
    }
  }
  absl::StatusOr<std::unique_ptr<AggregationStrategy>> strategy =
      MakeAggregationStrategy(options.config, options.initial_model.manifest());
  if (!strategy.ok()) return strategy.status();
  RemoveStaleSpoolFiles(options.out_dir / "spool");
  RemoveTornCheckpoints(options.out_dir);

  nlohmann::json summary, strategy_state;
  if (resumed && resumed->summary.is_object()) {
    summary = std::move(resumed->summary);
    if (summary.contains(RoundRecorder::kStrategyStateKey)) {
      strategy_state = std::move(summary[RoundRecorder::kStrategyStateKey]);
      summary.erase(RoundRecorder::kStrategyStateKey);
    }
  }
  ParticipantRegistry registry(options.config.name, f.sites, f.revoked_sites);
  std::unique_ptr<FederatedJob> job(new FederatedJob(std::move(options), std::move(registry), std::move(*store),
                                                     std::move(*strategy), std::move(summary)));
  if (new_job) {
    absl::StatusOr<uint64_t> seq = job->recorder_->Record(job->launched_by_, audit::action::kJobCreate, "", "",
                                                          nullptr, core::ToJson(job->core_.config), "");
    if (!seq.ok()) return seq.status();
  }
  if (resumed) {
    job->core_.completed_rounds = resumed->round;
    job->core_.model_version = resumed->model_version;
    const nlohmann::json rounds = job->recorder_->summary()["rounds"];
    if (absl::Status s = job->strategy_->RestoreState(strategy_state, rounds); !s.ok()) return s;
    // A crash after the checkpoint and before its record: complete the record, once.
    if (absl::Status s = job->recorder_->CompleteResumedRound(); !s.ok()) return s;
    spdlog::info("job={} resuming after round {} from {}", job->job_id(), resumed->round, checkpoint_path.string());
  }
  return job;
}

absl::Status FederatedJob::Run() {
  RoundDriver driver({&core_, strategy_.get(), recorder_.get(), store_.get(), &changes_mu_, evaluate_, write_model_,
                      metrics_.get()});
  return driver.Run();
}

void FederatedJob::Cancel() {
  {
    std::lock_guard lock(core_.mu);
    core_.cancelled = true;
    core_.cv.notify_all();
  }
  core_.NotifyListeners();
}

bool FederatedJob::finished() const {
  std::lock_guard lock(core_.mu);
  return Ended(core_.state);
}

// --- the network path: memory only ---

absl::StatusOr<JoinResult> FederatedJob::Join(const std::string& site, uint64_t num_samples,
                                               std::string_view client_public_key, const LedgerPosition& ledger) {
  if (absl::Status s = ParticipantRegistry::CheckName(site); !s.ok()) return s;
  // Keys first: a client that cannot agree keys is not registered, so it is never
  // selected for a round it could not take part in.
  absl::StatusOr<std::shared_ptr<wire::SealedSession>> session =
      wire::SealedSession::Agree(sealing_keys_, client_public_key, crypto::Side::kServer, job_id(), site);
  if (!session.ok()) {
    spdlog::warn("job={} site={} join refused: {}", job_id(), site, std::string(session.status().message()));
    return absl::Status(session.status().code(),
                        absl::StrCat("join of ", site, " to job ", job_id(), ": ", session.status().message()));
  }
  // A site whose ledger lost spends the server saw would train on a reset budget. The
  // check may anchor a first ledger on disk: it runs before the job's lock is taken.
  if (ledger_anchors_ != nullptr) {
    if (absl::Status s = ledger_anchors_->CheckJoin(site, ledger); !s.ok()) {
      recorder_->Note({site, "site"}, audit::action::kAccessDenied, site, nullptr, nullptr,
                      absl::StrCat("Join: ", s.message()));
      return s;
    }
  }
  {
    std::lock_guard lock(core_.mu);
    if (absl::Status s =
            core_.participants.CheckJoin(site, num_samples, core_.config.federation.max_samples_per_site);
        !s.ok()) {
      spdlog::warn("job={} site={} join refused: {}", job_id(), site, std::string(s.message()));
      return s;
    }
    const bool rejoin = core_.participants.Join(site, num_samples, std::move(*session), core::Clock::now());
    spdlog::info("job={} site={} {} with {} samples ({} clients known), session keys agreed", job_id(), site,
                 rejoin ? "re-joined" : "joined", num_samples, core_.participants.joined().size());
    recorder_->Note({site, "site"}, audit::action::kParticipantJoin, site, nullptr,
                    {{"samples", num_samples}, {"rejoin", rejoin}}, "");
    core_.cv.notify_all();
  }
  core_.NotifyListeners();
  const crypto::X25519PublicKey& public_key = sealing_keys_.public_key;
  return JoinResult{site, std::string(reinterpret_cast<const char*>(public_key.data()), public_key.size())};
}

absl::Status FederatedJob::Heartbeat(const std::string& client_id) {
  std::lock_guard lock(core_.mu);
  if (core_.participants.Find(client_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("client ", client_id, " has not joined job ", job_id()));
  }
  if (core_.participants.Touch(client_id, core::Clock::now())) {
    spdlog::info("job={} site={} is back", job_id(), client_id);
    core_.cv.notify_all();
  }
  return absl::OkStatus();
}

std::optional<Task> FederatedJob::PollTask(const std::string& client_id) {
  std::lock_guard lock(core_.mu);
  return PollTaskLocked(client_id);
}

std::optional<Task> FederatedJob::PollTaskLocked(const std::string& client_id) {
  Task task;
  task.total_rounds = static_cast<uint32_t>(core_.config.federation.rounds);
  ParticipantRegistry::Participant* participant = core_.participants.Find(client_id);
  if (participant == nullptr) {
    task.kind = Task::Kind::kDone;
    task.done_reason = Task::DoneReason::kNotJoined;
    task.message = absl::StrCat("client ", client_id, " has not joined job ", job_id());
    return task;
  }
  participant->last_seen = core::Clock::now();
  if (Ended(core_.state)) {
    task.kind = Task::Kind::kDone;
    task.done_reason = core_.state == JobState::kFailed    ? Task::DoneReason::kFailed
                       : core_.state == JobState::kStopped ? Task::DoneReason::kStopped
                                                           : Task::DoneReason::kFinished;
    task.message = core_.state == JobState::kFailed ? absl::StrCat("job failed: ", core_.failure)
                                                    : absl::StrCat("job ", std::string(JobStateName(core_.state)));
    return task;
  }
  const core::RoundTracker& tracker = core_.tracker;
  if (!tracker.open() || !tracker.CheckMayReport(client_id, tracker.round()).ok()) return std::nullopt;
  if (participant->session == nullptr) {
    // Revoked, or joined without keys (which Join never allows): it must join again.
    task.kind = Task::Kind::kDone;
    task.done_reason = Task::DoneReason::kNotJoined;
    task.message = absl::StrCat("client ", client_id, " has not joined job ", job_id(), " with session keys");
    return task;
  }
  task.kind = Task::Kind::kTrain;
  task.round = tracker.round();
  task.model_version = core_.model_version;
  task.training_config_json = core::ToJson(core_.config.training).dump();
  task.privacy_config_json = core::ToJson(core_.config.privacy).dump();
  if (core_.config.federation.compression.enabled()) {
    task.compression_config_json = core::ToJson(core_.config.federation.compression).dump();
  }
  task.model = core_.global;
  task.session = participant->session;
  participant->last_task_round = task.round;
  return task;
}

Task FederatedJob::WaitForTask(const std::string& client_id, std::chrono::milliseconds wait) {
  std::unique_lock lock(core_.mu);
  const auto deadline = core::Clock::now() + wait;
  for (;;) {
    if (std::optional<Task> task = PollTaskLocked(client_id)) return std::move(*task);
    if (core_.cv.wait_until(lock, deadline) == std::cv_status::timeout) {
      Task waiting;
      waiting.kind = Task::Kind::kWait;
      waiting.total_rounds = static_cast<uint32_t>(core_.config.federation.rounds);
      return waiting;
    }
  }
}

void FederatedJob::AddChangeListener(std::function<void()> listener) { core_.AddListener(std::move(listener)); }

absl::StatusOr<core::UpdateReceiver> FederatedJob::BeginUpdate(const UpdateHeader& header) {
  std::shared_ptr<wire::SealedSession> session;
  std::shared_ptr<const core::ParameterSet> global;
  double max_update_norm = 0;
  core::UpdateEncoding encoding;
  {
    std::lock_guard lock(core_.mu);
    ParticipantRegistry::Participant* participant = core_.participants.Find(header.client_id);
    if (participant == nullptr) {
      return absl::NotFoundError(absl::StrCat("client ", header.client_id, " has not joined job ", job_id()));
    }
    participant->last_seen = core::Clock::now();
    if (absl::Status s = core_.tracker.CheckMayReport(header.client_id, header.round); !s.ok()) return s;
    if (header.base_model_version != core_.model_version) {
      return absl::FailedPreconditionError(absl::StrCat("update was trained on model version ",
                                                        header.base_model_version, ", the round's model is version ",
                                                        core_.model_version));
    }
    global = core_.global;
    if (absl::Status s = global->manifest().CheckSameAs(header.manifest); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("update does not match the model: ", s.message()));
    }
    if (header.num_samples == 0) return absl::InvalidArgumentError("update: num_samples must be > 0");
    // The sample count is the update's FedAvg weight: a site may not claim more than it
    // declared when it joined (and that was bounded by federation.max_samples_per_site).
    if (header.num_samples > participant->declared_samples) {
      return absl::InvalidArgumentError(absl::StrCat("update: num_samples ", header.num_samples, " exceeds the ",
                                                     participant->declared_samples, " samples site ",
                                                     header.client_id, " declared when it joined"));
    }
    session = participant->session;
    max_update_norm = core_.config.federation.max_update_norm;
    core_.progress.UploadBegan(header.client_id, core::Clock::now());  // ends the round's "training" phase
    encoding = core::EncodingOf(core_.config.federation.compression);
  }
  // Compression is the job's, not the site's choice: the bytes a site may send per value
  // are bounded by it.
  if (header.encoding != encoding) {
    return absl::InvalidArgumentError(absl::StrCat("update: encoded as ", core::DescribeEncoding(header.encoding),
                                                   ", but the job's federation.compression is ",
                                                   core::DescribeEncoding(encoding)));
  }
  if (header.chunk_bytes < core::kMinChunkBytes || header.chunk_bytes > core::kMaxChunkBytes ||
      header.chunk_bytes % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("update: chunk_bytes must be a multiple of 4 in [4096, 3 MiB], got ", header.chunk_bytes));
  }
  const size_t total_bytes = global->manifest().total_bytes();
  const uint32_t expected_count = core::ChunkCount(total_bytes, header.chunk_bytes);
  if (header.chunk_count != expected_count) {
    return absl::InvalidArgumentError(absl::StrCat("update: chunk_count ", header.chunk_count, " does not fit ",
                                                   total_bytes, " bytes in chunks of ", header.chunk_bytes,
                                                   " (expected ", expected_count, ")"));
  }
  if (session == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("client ", header.client_id, " has no session keys for job ", job_id(), "; join again"));
  }
  const std::filesystem::path spool =
      out_dir_ / "spool" / absl::StrCat("round-", header.round, "-", header.client_id, ".update");
  // Written over a folded update's file when one is kept: its page-cache pages exist, and
  // fresh ones are what made the spool write the slowest step of an upload here.
  strategy_->RecycleSpoolFile(spool);
  // Opens each chunk as it arrives; the spool keeps the chunks sealed, and the codec (with
  // its own copy of the receive key) travels with the spooled update to the fold.
  return core::UpdateReceiver::Open(global->manifest(), header.chunk_count, header.chunk_bytes, spool,
                                    {max_update_norm},
                                    session->StreamOpener(header.round, header.base_model_version, header.chunk_count),
                                    encoding);
}

absl::Status FederatedJob::CommitUpdate(const UpdateHeader& header, core::UpdateReceiver receiver) {
  absl::StatusOr<core::SpooledUpdate> update =
      receiver.Finish(static_cast<double>(header.num_samples), header.client_id);
  if (!update.ok()) {
    RejectUpdate(header, update.status());
    return update.status();
  }
  absl::Status may_report;
  {
    std::lock_guard lock(core_.mu);
    // The round may have closed while the update streamed in.
    may_report = core_.tracker.CheckMayReport(header.client_id, header.round);
    if (may_report.ok()) {
      const double norm = update->l2_norm;
      // Handed over under the lock, so that the round cannot close between its report and
      // its update; the strategy only queues it (it folds on its own thread).
      strategy_->Accept(std::move(*update));
      core_.tracker.MarkReported(header.client_id);
      core_.reports[header.client_id] = {header.num_samples, header.metrics, norm, header.privacy_spend};
      spdlog::info("job={} round={} site={} update accepted: {} samples, train loss {:.4f}, local accuracy {:.4f}, "
                   "|delta| {:.4f} ({}/{} reported)",
                   job_id(), header.round, header.client_id, header.num_samples, header.metrics.train_loss,
                   header.metrics.eval_accuracy, norm, core_.tracker.reported().size(),
                   core_.tracker.selected().size());
      core_.cv.notify_all();
      return absl::OkStatus();
    }
  }
  std::error_code ignored;
  std::filesystem::remove(update->path, ignored);
  return may_report;
}

void FederatedJob::RejectUpdate(const UpdateHeader& header, const absl::Status& why) {
  std::lock_guard lock(core_.mu);
  spdlog::warn("job={} round={} site={} update rejected: {}", job_id(), header.round, header.client_id,
               std::string(why.message()));
  if (core_.tracker.open() && core_.tracker.round() == header.round) core_.tracker.MarkFailed(header.client_id);
  core_.cv.notify_all();
}

absl::Status FederatedJob::Decline(const std::string& client_id, uint64_t round, const std::string& reason) {
  {
    std::lock_guard lock(core_.mu);
    const ParticipantRegistry::Participant* participant = core_.participants.Find(client_id);
    if (participant == nullptr) {
      return absl::NotFoundError(absl::StrCat("client ", client_id, " has not joined job ", job_id()));
    }
    if (participant->declined) return absl::OkStatus();
  }
  // On record before it takes effect, written without the job's lock.
  absl::StatusOr<uint64_t> seq = recorder_->Record({client_id, "site"}, audit::action::kParticipantDecline, "",
                                                   client_id, "active", "declined", reason);
  if (!seq.ok()) return seq.status();
  std::lock_guard lock(core_.mu);
  if (!core_.participants.Decline(client_id)) return absl::OkStatus();
  if (core_.tracker.open() && core_.tracker.round() == round && core_.tracker.IsSelected(client_id) &&
      !core_.tracker.reported().contains(client_id)) {
    core_.tracker.MarkFailed(client_id);
  }
  spdlog::warn("job={} round={} site={} declined and leaves the job: {}", job_id(), round, client_id, reason);
  core_.cv.notify_all();
  return absl::OkStatus();
}

absl::Status FederatedJob::CheckParticipant(const std::string& site) const {
  std::lock_guard lock(core_.mu);
  return core_.participants.CheckMayTakePart(site);
}

void FederatedJob::RecordDenied(const Actor& actor, const std::string& method, const absl::Status& why) {
  // The first refusal of a kind is on the log before its caller hears of it; repeats are
  // counted and written as one entry, so a caller cannot flood the log.
  recorder_->RecordDenied(actor, method, why);
}

}  // namespace cohort::server
