#include "client/agent.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/agent_state_machine.h"
#include "client/site_ledger.h"
#include "core/bounded_json.h"
#include "core/job_config.h"
#include "training/dp_sgd.h"
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
    absl::StatusOr<wire::Session> joined = client_.Join(options_.site, num_samples_, join);
    if (!joined.ok()) {
      if (ServerAway(joined.status())) return agent_event::ServerUnavailable{joined.status()};
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
    spdlog::info("job={} site={} joined: model {} ({} parameters), {} training and {} held-out examples",
                 session_.job_id, options_.site, spec->name, spec->num_parameters(), options_.train.size(),
                 options_.eval.size());
    absl::StatusOr<std::unique_ptr<training::LocalTrainer>> trainer =
        training::LocalTrainer::Create(*spec, std::move(options_.train), std::move(options_.eval), options_.seed,
                                       training::TrainerOptions{options_.device, options_.group, std::nullopt});
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
    if (privacy.mechanism == "dp_sgd") {
      absl::StatusOr<training::DpSgdSpend> plan =
          training::PlanDpSgdRound(privacy, *config, num_samples_, task_.total_rounds());
      if (!plan.ok()) return agent_event::Failed{plan.status()};
      absl::StatusOr<privacy::SpendCheck> reserved =
          ledger_->Reserve(training::SpendRequestFor(*plan, session_.job_id, static_cast<int64_t>(task_.round())),
                           {privacy.target_epsilon, privacy.target_delta});
      if (!reserved.ok()) {
        const bool refusal = reserved.status().code() == absl::StatusCode::kResourceExhausted ||
                             reserved.status().code() == absl::StatusCode::kFailedPrecondition;
        if (!refusal) return agent_event::Failed{reserved.status()};
        const std::string why = absl::StrCat("privacy budget: ", reserved.status().message());
        spdlog::warn("job={} round={} site={} will not train: {}", session_.job_id, task_.round(), options_.site, why);
        decline_reason_ = why;
        return agent_event::BudgetSpent{why};
      }
      spend_.emplace();
      spend_->set_sampling_rate(plan->sampling_rate);
      spend_->set_noise_multiplier(plan->noise_multiplier);
      spend_->set_steps(plan->steps);
      spend_->set_clip_norm(plan->clip_norm);
      spend_->set_epsilon_after(reserved->epsilon_after);
      spdlog::info("job={} round={} site={} privacy ledger {}: epsilon {:.3f} of {} after this round",
                   session_.job_id, task_.round(), options_.site, ledger_->path().string(), reserved->epsilon_after,
                   privacy.target_epsilon);
    }
    absl::StatusOr<training::RoundResult> result =
        trainer_->TrainRound(global_, *config, task_.round(), task_.total_rounds(), privacy);
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
    return agent_event::Trained{};
  }

  AgentEvent Push() {
    wire::UpdateInfo info = wire::UpdateInfoFor(task_, num_samples_);
    info.metrics = result_->metrics;
    info.privacy_spend = spend_;
    if (spend_) info.ledger = ledger_->Position();
    const absl::Status pushed = client_.PushUpdate(session_, info, result_->delta);
    result_.reset();
    if (!pushed.ok()) {
      spdlog::warn("job={} round={} site={} {}", session_.job_id, task_.round(), options_.site,
                   std::string(pushed.message()));
      return agent_event::PushRefused{pushed};
    }
    return agent_event::Pushed{};
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
