#include "client/agent.h"

#include <algorithm>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/agent_state_machine.h"
#include "client/kept_update.h"
#include "client/site_ledger.h"
#include "client/site_metrics.h"
#include "client/update_residual.h"
#include "core/bounded_json.h"
#include "core/call_rate.h"
#include "core/job_config.h"
#include "storage/sha256.h"
#include "core/update_compression.h"
#include "training/dp_sgd.h"
#include "training/lora.h"
#include "training/model_spec.h"
#include "training/trainer.h"
#include "wire/federation_client.h"

namespace cohort::client {
namespace {

using Clock = AgentStateMachine::Clock;

// Sends heartbeats from its own thread so a long local epoch does not look like a crash.
class HeartbeatLoop {
 public:
  // `client` must outlive the loop. Only the session's names are kept, not its keys.
  HeartbeatLoop(wire::FederationClient& client, const wire::Session& session)
      : session_{session.job_id, session.client_id, "", session.heartbeat_every, "", nullptr},
        thread_([this, &client] {
          std::unique_lock lock(mu_);
          while (!cv_.wait_for(lock, session_.heartbeat_every, [this] { return stop_; })) {
            lock.unlock();
            (void)client.Heartbeat(session_, session_.heartbeat_every);
            lock.lock();
          }
        }) {}
  ~HeartbeatLoop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  const wire::Session session_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

DoneReason FromProto(v1::DoneReason reason) {
  switch (reason) {
    case v1::FINISHED: return DoneReason::kFinished;
    case v1::STOPPED: return DoneReason::kStopped;
    case v1::FAILED: return DoneReason::kFailed;
    case v1::NOT_JOINED: return DoneReason::kNotJoined;
    default: return DoneReason::kUnspecified;
  }
}

bool ServerAway(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
}

// The server refused the call for this site's call rate (core::kCallRateRefusal): nothing
// was taken, and the same call succeeds once the site slows down.
bool RateLimited(const absl::Status& s) {
  return s.code() == absl::StatusCode::kResourceExhausted && absl::StrContains(s.message(), core::kCallRateRefusal);
}

void BackOffForCallRate() { std::this_thread::sleep_for(std::chrono::milliseconds(core::kCallRateBackoffMs)); }

// One site's part in a job: performs the action of each state of the AgentStateMachine
// with the federation client and the trainer, and reports what it came to.
class Agent {
 public:
  Agent(AgentOptions options, const wire::Connection& connection, std::unique_ptr<SiteLedger> ledger)
      : options_(std::move(options)),
        num_samples_(options_.train.size()),
        client_(connection),
        ledger_(std::move(ledger)) {}

  absl::Status Run() {
    AgentStateMachine machine(
        std::chrono::milliseconds(static_cast<int64_t>(options_.connect_timeout_s * 1000)), Clock::now());
    while (machine.state() != AgentState::kDone) {
      const AgentEvent event = Act(machine.state());
      const bool was_unreachable = machine.server_unreachable();
      const AgentStep step = machine.On(event, Clock::now());
      if (!was_unreachable && machine.server_unreachable()) {
        spdlog::warn("job={} site={} server unreachable ({}); retrying", session_.job_id, options_.site,
                     std::string(std::get<agent_event::ServerUnavailable>(event).status.message()));
      } else if (was_unreachable && !machine.server_unreachable() && machine.state() != AgentState::kDone) {
        spdlog::info("job={} site={} server reachable again", session_.job_id, options_.site);
      }
      if (step.pause.count() > 0) std::this_thread::sleep_for(step.pause);
    }
    return machine.result();
  }

 private:
  AgentEvent Act(AgentState state) {
    switch (state) {
      case AgentState::kJoining: return Join();
      case AgentState::kPulling: return Pull();
      case AgentState::kTraining: return Train();
      case AgentState::kPushing: return Push();
      case AgentState::kDeclining: return Decline();
      case AgentState::kDone: break;
    }
    return agent_event::Failed{absl::InternalError("the agent has nothing to do once done")};
  }

  AgentEvent Join() {
    wire::JoinOptions join;
    join.job_id = options_.job_id;
    join.ledger = ledger_->Position();
    // Waits (up to join.timeout) for the connection rather than failing at once: a
    // synchronous gRPC channel only makes progress connecting while a call waits on it,
    // so failing fast and sleeping between tries moved one connection step per try, and a
    // site started beside its server joined 20 s after the server listened.
    join.wait_for_ready = true;
    join.timeout = std::min(join.timeout, std::chrono::milliseconds(static_cast<int64_t>(
                                              std::max(0.1, options_.connect_timeout_s) * 1000)));
    absl::StatusOr<wire::Session> joined = client_.Join(options_.site, num_samples_, join);
    if (!joined.ok()) {
      if (ServerAway(joined.status()) || RateLimited(joined.status())) {
        return agent_event::ServerUnavailable{joined.status()};
      }
      if (joined.status().code() == absl::StatusCode::kFailedPrecondition &&
          absl::StrContains(joined.status().message(), "privacy ledger")) {
        // The server's anchor says this site's ledger lost spends: name the file to restore.
        return agent_event::Failed{absl::FailedPreconditionError(
            absl::StrCat(joined.status().message(), " (this site's ledger file: ", ledger_->path().string(),
                         "; restore it from a backup of that file)"))};
      }
      return agent_event::Failed{joined.status()};
    }
    session_ = std::move(*joined);  // a re-join's new keys replace (and wipe) the old ones
    if (trainer_) {
      spdlog::info("job={} site={} joined again", session_.job_id, options_.site);
      return agent_event::Joined{};
    }
    // The first join: the model to train comes with it.
    absl::StatusOr<nlohmann::json> model_config =
        core::ParseBoundedJson(session_.model_config_json, core::kTaskConfigJson, "model_config from the server");
    if (!model_config.ok()) return agent_event::Failed{model_config.status()};
    absl::StatusOr<training::ModelSpec> spec = training::ParseModelSpec(*model_config);
    if (!spec.ok()) return agent_event::Failed{spec.status()};
    if (spec->uses_lora()) {
      if (absl::Status s = training::LoadLoraBase(&*spec, options_.base_model); !s.ok()) {
        return agent_event::Failed{s};
      }
      spdlog::info("job={} site={} LoRA base model {} (SHA-256 {}) checked", session_.job_id, options_.site,
                   spec->transformer->lora->base_model, spec->transformer->lora->base_sha256);
    }
    spdlog::info("job={} site={} joined: model {} ({} parameters), {} training and {} held-out examples",
                 session_.job_id, options_.site, spec->name, spec->num_parameters(), options_.train.size(),
                 options_.eval.size());
    absl::StatusOr<std::unique_ptr<training::LocalTrainer>> trainer =
        training::LocalTrainer::Create(*spec, std::move(options_.train), std::move(options_.eval), options_.seed,
                                       training::TrainerOptions{options_.device, options_.group, options_.dp_sgd_seed_for_tests, options_.base_model});
    if (!trainer.ok()) return agent_event::Failed{trainer.status()};
    trainer_ = std::move(*trainer);
    heartbeat_.emplace(client_, session_);
    return agent_event::Joined{};
  }

  AgentEvent Pull() {
    // Opened straight into last round's model buffer when the layout is the same,
    // instead of faulting in a fresh zero-filled model every round.
    absl::StatusOr<wire::PulledTask> pulled = client_.PullTask(session_, &global_);
    if (!pulled.ok()) {
      if (ServerAway(pulled.status())) return agent_event::ServerUnavailable{pulled.status()};
      if (RateLimited(pulled.status())) {
        BackOffForCallRate();
        return agent_event::Wait{};
      }
      if (pulled.status().code() == absl::StatusCode::kNotFound) return agent_event::NotJoined{pulled.status()};
      return agent_event::Failed{pulled.status()};
    }
    task_ = std::move(pulled->header);
    switch (task_.kind()) {
      case v1::TaskHeader::TRAIN:
        if (!pulled->download.ok()) {
          spdlog::warn("job={} round={} site={} model download failed: {}", session_.job_id, task_.round(),
                       options_.site, std::string(pulled->download.message()));
          return agent_event::DownloadFailed{pulled->download};
        }
        if (options_.metrics != nullptr) options_.metrics->ModelReceived(global_.manifest().total_bytes());
        return agent_event::Train{};
      case v1::TaskHeader::DONE: {
        const DoneReason reason = FromProto(task_.done_reason());
        if (reason != DoneReason::kNotJoined) {
          spdlog::info("job={} site={} done: {}", session_.job_id, options_.site, task_.message());
        }
        return agent_event::Done{reason, task_.message()};
      }
      default:
        return agent_event::Wait{};
    }
  }

  AgentEvent Train() {
    absl::StatusOr<nlohmann::json> config_json =
        core::ParseBoundedJson(task_.training_config_json(), core::kTaskConfigJson, "training_config from the server");
    if (!config_json.ok()) return agent_event::Failed{config_json.status()};
    absl::StatusOr<core::TrainingConfig> config = core::ParseTrainingConfig(*config_json);
    if (!config.ok()) return agent_event::Failed{config.status()};
    training::SetTrainingThreads(options_.threads > 0 ? options_.threads : static_cast<int>(config->threads));
    spdlog::info("job={} round={}/{} site={} training ({} local epochs, lr {})", session_.job_id, task_.round(),
                 task_.total_rounds(), options_.site, config->local_epochs, config->learning_rate);
    // The job's "privacy" section; a server that sends none runs no DP.
    core::PrivacyConfig privacy;
    if (!task_.privacy_config_json().empty()) {
      absl::StatusOr<nlohmann::json> privacy_json =
          core::ParseBoundedJson(task_.privacy_config_json(), core::kTaskConfigJson, "privacy_config from the server");
      if (!privacy_json.ok()) return agent_event::Failed{privacy_json.status()};
      absl::StatusOr<core::PrivacyConfig> parsed = core::ParsePrivacyConfig(*privacy_json);
      if (!parsed.ok()) return agent_event::Failed{parsed.status()};
      privacy = std::move(*parsed);
    }
    // DP-SGD spends the site's budget: the spend is on disk in its ledger before training
    // starts, and a round that would exceed the budget is declined instead.
    spend_.reset();
    std::string global_sha256;  // under DP-SGD: the model this round's update is kept for
    if (privacy.mechanism == "dp_sgd") {
      global_sha256 = storage::Sha256Hex(global_.bytes());
      // Each ledger spend pays for one release (client/kept_update.h): a round whose update
      // was kept is answered with the same bytes, and spends nothing more.
      absl::StatusOr<KeptUpdate> kept = LoadKeptUpdate(KeptUpdatePath(ledger_->path()));
      if (!kept.ok() && !absl::IsNotFound(kept.status())) {
        spdlog::warn("job={} round={} site={} {}; this round is charged as a new release", session_.job_id,
                     task_.round(), options_.site, std::string(kept.status().message()));
      }
      if (kept.ok() && kept->round.job == session_.job_id && kept->round.round == task_.round() &&
          kept->round.global_sha256 == global_sha256) {
        spdlog::info("job={} round={} site={} sending again the update kept for this round: no new privacy spend",
                     session_.job_id, task_.round(), options_.site);
        spend_ = kept->round.spend;
        result_.emplace();
        result_->delta = std::move(kept->delta);
        result_->metrics = kept->round.metrics;
        return agent_event::Trained{};
      }
      absl::StatusOr<training::DpSgdSpend> plan =
          training::PlanDpSgdRound(privacy, *config, num_samples_, task_.total_rounds());
      if (!plan.ok()) return agent_event::Failed{plan.status()};
      // The ledger's last spend is this round's and no update was kept for it: the process
      // that recorded it stopped before anything was released, so this training uses it.
      const bool unreleased = ledger_->LastSpendIs(session_.job_id, static_cast<int64_t>(task_.round())) &&
                              (kept.ok() ? kept->round.spend_seq != ledger_->spend_count()
                                         : absl::IsNotFound(kept.status()));
      double epsilon_after = ledger_->spent_epsilon();
      if (unreleased) {
        spdlog::info("job={} round={} site={} trains under the spend its ledger recorded for this round before a "
                     "restart (nothing was released under it)",
                     session_.job_id, task_.round(), options_.site);
      } else {
        absl::StatusOr<privacy::SpendCheck> reserved =
            ledger_->Reserve(training::SpendRequestFor(*plan, session_.job_id, static_cast<int64_t>(task_.round())),
                             {privacy.target_epsilon, privacy.target_delta});
        if (!reserved.ok()) {
          const bool refusal = reserved.status().code() == absl::StatusCode::kResourceExhausted ||
                               reserved.status().code() == absl::StatusCode::kFailedPrecondition;
          if (!refusal) return agent_event::Failed{reserved.status()};
          const std::string why = absl::StrCat("privacy budget: ", reserved.status().message());
          spdlog::warn("job={} round={} site={} will not train: {}", session_.job_id, task_.round(), options_.site,
                       why);
          decline_reason_ = why;
          return agent_event::BudgetSpent{why};
        }
        epsilon_after = reserved->epsilon_after;
      }
      spend_.emplace();
      spend_->set_sampling_rate(plan->sampling_rate);
      spend_->set_noise_multiplier(plan->noise_multiplier);
      spend_->set_steps(plan->steps);
      spend_->set_clip_norm(plan->clip_norm);
      spend_->set_epsilon_after(epsilon_after);
      spdlog::info("job={} round={} site={} privacy ledger {}: epsilon {:.3f} of {} after this round",
                   session_.job_id, task_.round(), options_.site, ledger_->path().string(), epsilon_after,
                   privacy.target_epsilon);
    }
    // The downloaded model becomes the update in place (no second model-sized buffer); its
    // buffer comes back to global_ once the update is sent, for the next download.
    absl::StatusOr<training::RoundResult> result =
        trainer_->TrainRound(std::move(global_), *config, task_.round(), task_.total_rounds(), privacy);
    if (!result.ok()) return agent_event::Failed{result.status()};
    if (const std::optional<training::DpSgdSpend>& spent = result->dp_sgd) {
      spdlog::info("job={} round={} site={} DP-SGD: {} steps at sampling rate {:.5f}, noise multiplier {:.4f}, "
                   "clip norm {} (epsilon {:.3f} at delta {} for the whole job)",
                   session_.job_id, task_.round(), options_.site, spent->steps, spent->sampling_rate,
                   spent->noise_multiplier, spent->clip_norm, spent->job_epsilon, privacy.target_delta);
    }
    const core::TrainMetrics& m = result->metrics;
    spdlog::info("job={} round={} site={} trained {} steps in {:.1f} s: train loss {:.4f}, held-out accuracy {:.4f}",
                 session_.job_id, task_.round(), options_.site, m.steps, m.train_seconds, m.train_loss,
                 m.eval_accuracy);
    result_ = std::move(*result);
    if (spend_) {
      // Kept before it can leave the site; an update that cannot be kept is not sent, since a
      // retry would then release a second one under the same spend.
      const KeptRound kept_round{session_.job_id, task_.round(), global_sha256, ledger_->spend_count(),
                                 result_->metrics, *spend_};
      if (absl::Status s = SaveKeptUpdate(KeptUpdatePath(ledger_->path()), kept_round, result_->delta); !s.ok()) {
        return agent_event::Failed{s};
      }
    }
    return agent_event::Trained{};
  }

  AgentEvent Push() {
    wire::UpdateInfo info = wire::UpdateInfoFor(task_, num_samples_);
    info.metrics = result_->metrics;
    info.privacy_spend = spend_;
    if (spend_) info.ledger = ledger_->Position();
    absl::StatusOr<core::CompressionConfig> compression = TaskCompression();
    if (!compression.ok()) return agent_event::Failed{compression.status()};
    uint64_t bytes_sent = 0;
    absl::Status pushed;
    std::vector<float> next_residual;  // error feedback: kept only once the server accepted the update
    std::optional<core::EncodedUpdate> encoded;
    if (compression->enabled()) {
      absl::StatusOr<core::EncodedUpdate> compressed = Compress(*compression, info.chunk_bytes, &next_residual);
      if (!compressed.ok() && compressed.status().code() == absl::StatusCode::kDataLoss) {
        return agent_event::Failed{compressed.status()};  // a corrupt residual file: the operator decides
      }
      if (compressed.ok()) {
        encoded = std::move(*compressed);
      } else {
        pushed = compressed.status();
      }
    }
    // A push refused for the call rate took nothing: the same update goes again once the
    // site has slowed down, a few times (within the round's time).
    constexpr int kPushTries = 20;
    for (int attempt = 1; pushed.ok(); ++attempt) {
      bytes_sent = 0;
      pushed = encoded ? client_.PushEncodedUpdate(session_, info, *encoded, &bytes_sent)
                       : client_.PushUpdate(session_, info, result_->delta, &bytes_sent);
      if (!RateLimited(pushed) || attempt == kPushTries) break;
      BackOffForCallRate();
      pushed = absl::OkStatus();
    }
    const size_t parameters = result_->delta.manifest().total_bytes() / sizeof(float);
    // The next download is opened straight into this buffer (wire::FederationClient::PullTask).
    if (global_.bytes().empty()) global_ = std::move(result_->delta);
    result_.reset();
    if (!pushed.ok()) {
      spdlog::warn("job={} round={} site={} {}", session_.job_id, task_.round(), options_.site,
                   std::string(pushed.message()));
      return agent_event::PushRefused{pushed};
    }
    // Counted from the messages this site wrote: what the update cost on the wire.
    spdlog::info("job={} round={} site={} update sent: {} bytes for {} parameters, {:.4f} bytes per parameter "
                 "(compression {})",
                 session_.job_id, task_.round(), options_.site, bytes_sent, parameters,
                 parameters == 0 ? 0.0 : static_cast<double>(bytes_sent) / static_cast<double>(parameters),
                 compression->method);
    if (options_.metrics != nullptr) {
      options_.metrics->RoundTrained(info.metrics, bytes_sent,
                                     spend_ ? std::optional<double>(spend_->epsilon_after()) : std::nullopt);
    }
    if (!next_residual.empty()) {
      if (absl::Status s = residual_->Save(task_.round(), next_residual); !s.ok()) {
        // The update was accepted; the next round then adds the residual before this one.
        spdlog::warn("job={} round={} site={} error-feedback residual not saved: {}", session_.job_id, task_.round(),
                     options_.site, std::string(s.message()));
      }
    }
    return agent_event::Pushed{};
  }

  // The job's federation.compression as the task carries it; none when it carries none.
  absl::StatusOr<core::CompressionConfig> TaskCompression() const {
    if (task_.compression_config_json().empty()) return core::CompressionConfig{};
    absl::StatusOr<nlohmann::json> json = core::ParseBoundedJson(task_.compression_config_json(),
                                                                 core::kTaskConfigJson, "compression from the server");
    if (!json.ok()) return json.status();
    return core::ParseCompressionConfig(*json);
  }

  // Compresses this round's delta; with error feedback, `*next_residual` is the residual to
  // keep once the update is accepted. The residual lives beside the site's privacy ledger.
  absl::StatusOr<core::EncodedUpdate> Compress(const core::CompressionConfig& compression, size_t chunk_bytes,
                                               std::vector<float>* next_residual) {
    const core::ParameterSet& delta = result_->delta;
    const size_t values = delta.manifest().total_bytes() / sizeof(float);
    if (compression.error_feedback) {
      if (!residual_ || residual_->values().size() != values || residual_job_ != session_.job_id) {
        std::filesystem::path dir = ledger_->path().parent_path();
        if (dir.empty()) dir = ".";
        absl::StatusOr<UpdateResidual> loaded = UpdateResidual::Load(dir, session_.job_id, options_.site, values);
        if (!loaded.ok()) return loaded.status();
        if (!loaded->started_over().empty()) {
          spdlog::warn("job={} site={} error-feedback residual {}: {}", session_.job_id, options_.site,
                       loaded->path().string(), loaded->started_over());
        } else if (loaded->round() > 0) {
          spdlog::info("job={} site={} error-feedback residual {} carried on from round {}", session_.job_id,
                       options_.site, loaded->path().string(), loaded->round());
        }
        residual_.emplace(std::move(*loaded));
        residual_job_ = session_.job_id;
      }
      next_residual->assign(residual_->values().begin(), residual_->values().end());
    }
    // Stochastic rounding differs by site and round, and repeats when a round is redone.
    const uint64_t seed = options_.seed * 0x9e3779b97f4a7c15ULL + task_.round();
    return core::CompressUpdate(compression, delta, *next_residual, chunk_bytes, seed);
  }

  AgentEvent Decline() {
    if (const absl::Status s = client_.Decline(session_, task_.round(), decline_reason_); !s.ok()) {
      spdlog::warn("job={} site={} could not tell the server: {}", session_.job_id, options_.site,
                   std::string(s.message()));
    }
    return agent_event::Declined{};
  }

  AgentOptions options_;
  // The training rows move into the trainer at the first join; re-joins after a server
  // restart still announce how many there are.
  const uint64_t num_samples_;
  wire::FederationClient client_;
  std::unique_ptr<SiteLedger> ledger_;
  wire::Session session_;
  std::unique_ptr<training::LocalTrainer> trainer_;  // made at the first join
  std::optional<HeartbeatLoop> heartbeat_;           // from the first join on
  // The task at hand and what working on it produced.
  v1::TaskHeader task_;
  core::ParameterSet global_;  // the last global model, refilled in place by the next download
  std::optional<v1::PrivacySpend> spend_;
  std::optional<training::RoundResult> result_;
  std::optional<UpdateResidual> residual_;  // error feedback, loaded at the first compressed update
  std::string residual_job_;                 // the job residual_ belongs to
  std::string decline_reason_;  // what the server is told when the site declines
};

}  // namespace

absl::Status RunAgent(AgentOptions options) {
  wire::Connection connection{options.server_address, nullptr};
  if (!options.kit_dir.empty()) {
    absl::StatusOr<wire::SiteConnection> site = wire::SiteConnectionFromKit(options.kit_dir);
    if (!site.ok()) return site.status();
    if (!options.site.empty() && options.site != site->site) {
      return absl::InvalidArgumentError(absl::StrCat("--site ", options.site, " differs from the kit's certificate name ",
                                                     site->site, "; leave --site out"));
    }
    options.site = site->site;
    connection = site->connection;
    if (!options.server_address.empty()) connection.address = options.server_address;
  } else {
    spdlog::warn("site={} INSECURE: plaintext gRPC to {}, no certificates", options.site, options.server_address);
  }
  // A corrupt or edited privacy ledger stops the site before it joins anything.
  const std::string ledger_path =
      options.ledger_path.empty() ? absl::StrCat("privacy-ledger-", options.site, ".jsonl") : options.ledger_path;
  absl::StatusOr<std::unique_ptr<SiteLedger>> ledger = SiteLedger::Open(ledger_path, options.site);
  if (!ledger.ok()) return ledger.status();
  Agent agent(std::move(options), connection, std::move(*ledger));
  return agent.Run();
}

}  // namespace cohort::client
