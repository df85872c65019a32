#include "client/agent.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/chunking.h"
#include "core/job_config.h"
#include "crypto/key_agreement.h"
#include "crypto/startup_kit.h"
#include "proto/cohort.grpc.pb.h"
#include "proto/convert.h"
#include "client/site_ledger.h"
#include "proto/credentials.h"
#include "proto/sealing.h"
#include "proto/stream_settings.h"
#include "training/model_spec.h"
#include "training/trainer.h"

namespace cohort::client {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

bool Retryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Sends heartbeats from its own thread so a long local epoch does not look like a crash.
class HeartbeatLoop {
 public:
  HeartbeatLoop(v1::Federation::Stub* stub, std::string job_id, std::string client_id, std::chrono::milliseconds every)
      : thread_([=, this] {
          std::unique_lock lock(mu_);
          while (!cv_.wait_for(lock, every, [this] { return stop_; })) {
            lock.unlock();
            grpc::ClientContext context;
            context.set_deadline(std::chrono::system_clock::now() + every);
            v1::HeartbeatRequest request;
            request.set_job_id(job_id);
            request.set_client_id(client_id);
            v1::HeartbeatReply reply;
            (void)stub->Heartbeat(&context, request, &reply);
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
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

struct Session {
  std::string job_id, client_id;
  nlohmann::json model_config;
  std::chrono::milliseconds heartbeat_every{1000};
  // Keys agreed at this Join (proto/sealing.h); wiped when the session is replaced.
  std::shared_ptr<wire::SealedSession> sealing;
};

absl::StatusOr<Session> JoinWithRetry(v1::Federation::Stub& stub, const AgentOptions& options, uint64_t num_samples) {
  const auto give_up = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(options.connect_timeout_s * 1000));
  auto backoff = std::chrono::milliseconds(200);
  for (;;) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    // A fresh key pair for every Join: each session has keys of its own. The secret key
    // is wiped when `own` goes out of scope, once the session keys are derived.
    const crypto::X25519KeyPair own = crypto::GenerateX25519KeyPair();
    v1::JoinRequest request;
    request.set_job_id(options.job_id);
    request.set_site(options.site);
    request.set_num_samples(num_samples);
    request.set_client_public_key(reinterpret_cast<const char*>(own.public_key.data()), own.public_key.size());
    v1::JoinReply reply;
    const grpc::Status s = stub.Join(&context, request, &reply);
    if (s.ok()) {
      Session session{reply.job_id(), reply.client_id(), nlohmann::json::parse(reply.model_config_json(), nullptr, false),
                      std::chrono::milliseconds(std::max<uint32_t>(100, reply.heartbeat_interval_ms())), nullptr};
      if (session.model_config.is_discarded()) return absl::InvalidArgumentError("server sent an unreadable model_config");
      absl::StatusOr<std::shared_ptr<wire::SealedSession>> sealing = wire::SealedSession::Agree(
          own, reply.server_public_key(), crypto::Side::kClient, reply.job_id(), reply.client_id());
      if (!sealing.ok()) {
        return absl::Status(sealing.status().code(), absl::StrCat("agreeing session keys with ", options.server_address,
                                                                  ": ", sealing.status().message()));
      }
      session.sealing = std::move(*sealing);
      return session;
    }
    if (!Retryable(s) || Clock::now() > give_up) {
      return FromGrpc(s, absl::StrCat("joining the job at ", options.server_address));
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

absl::Status PushUpdate(v1::Federation::Stub& stub, const Session& session, const v1::TaskHeader& task,
                        const training::RoundResult& result, uint64_t num_samples, size_t chunk_bytes,
                        const std::optional<v1::PrivacySpend>& spend) {
  grpc::ClientContext context;
  v1::UpdateReceipt receipt;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateMessage>> writer = stub.PushUpdate(&context, &receipt);
  const std::span<const std::byte> bytes = result.delta.bytes();
  const uint32_t count = core::ChunkCount(bytes.size(), chunk_bytes);
  v1::UpdateMessage message;
  v1::UpdateHeader* header = message.mutable_header();
  header->set_job_id(session.job_id);
  header->set_client_id(session.client_id);
  header->set_round(task.round());
  header->set_base_model_version(task.model_version());
  wire::ToProto(result.delta.manifest(), header->mutable_manifest());
  header->set_num_samples(num_samples);
  header->set_chunk_count(count);
  header->set_chunk_bytes(static_cast<uint32_t>(chunk_bytes));
  wire::ToProto(result.metrics, header->mutable_metrics());
  if (spend) *header->mutable_privacy_spend() = *spend;
  bool open = writer->Write(message);
  v1::UpdateMessage chunk_message;
  v1::Chunk* chunk = chunk_message.mutable_chunk();
  absl::Status sealed = absl::OkStatus();
  for (uint32_t i = 0; open && i < count; ++i) {
    const std::span<const std::byte> piece = core::ChunkOf(bytes, i, chunk_bytes);
    chunk->set_index(i);
    chunk->set_count(count);
    // Sealed straight into the message (the seal is the copy), bound to this round, the
    // model version the update was trained on, and the chunk's place.
    sealed = session.sealing->SealChunk(task.round(), task.model_version(), i, count, piece, chunk->mutable_data());
    if (!sealed.ok()) break;
    open = writer->Write(chunk_message);
  }
  if (!sealed.ok()) context.TryCancel();
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  if (!sealed.ok()) return sealed;
  if (!s.ok()) return FromGrpc(s, absl::StrCat("pushing the update for round ", task.round()));
  return absl::OkStatus();
}

}  // namespace

absl::Status RunAgent(AgentOptions options) {
  core::KeepFreedMemoryForChunkStreams();
  grpc::ChannelArguments args;
  wire::ApplyChunkStreamSettings(args);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.kit_dir.empty()) {
    absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(options.kit_dir);
    if (!kit.ok()) return kit.status();
    if (kit->role != crypto::Role::kSite) {
      return absl::InvalidArgumentError(absl::StrCat("--kit ", options.kit_dir, " belongs to ", kit->name, " (role ",
                                                     std::string(crypto::RoleName(kit->role)),
                                                     "); a client needs a site kit"));
    }
    if (!options.site.empty() && options.site != kit->name) {
      return absl::InvalidArgumentError(absl::StrCat("--site ", options.site, " differs from the kit's certificate name ",
                                                     kit->name, "; leave --site out"));
    }
    options.site = kit->name;
    if (options.server_address.empty()) options.server_address = kit->server_address;
    credentials = wire::ChannelCredentialsFromKit(*kit);
  } else {
    spdlog::warn("site={} INSECURE: plaintext gRPC to {}, no certificates", options.site, options.server_address);
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(options.server_address, credentials, args);
  std::unique_ptr<v1::Federation::Stub> stub = v1::Federation::NewStub(channel);

  // The training rows move into the trainer below; re-joins after a server restart still
  // announce how many there are.
  const uint64_t num_samples = options.train.size();
  // A corrupt or edited privacy ledger stops the site before it joins anything.
  const std::string ledger_path =
      options.ledger_path.empty() ? absl::StrCat("privacy-ledger-", options.site, ".jsonl") : options.ledger_path;
  absl::StatusOr<std::unique_ptr<SiteLedger>> opened_ledger = SiteLedger::Open(ledger_path, options.site);
  if (!opened_ledger.ok()) return opened_ledger.status();
  std::unique_ptr<SiteLedger> ledger = std::move(*opened_ledger);
  absl::StatusOr<Session> session = JoinWithRetry(*stub, options, num_samples);
  if (!session.ok()) return session.status();
  absl::StatusOr<training::ModelSpec> spec = training::ParseModelSpec(session->model_config);
  if (!spec.ok()) return spec.status();
  spdlog::info("job={} site={} joined: model {} ({} parameters), {} training and {} held-out examples",
               session->job_id, options.site, spec->name, spec->num_parameters(), options.train.size(),
               options.eval.size());
  absl::StatusOr<std::unique_ptr<training::LocalTrainer>> trainer =
      training::LocalTrainer::Create(*spec, std::move(options.train), std::move(options.eval), options.seed);
  if (!trainer.ok()) return trainer.status();
  HeartbeatLoop heartbeat(stub.get(), session->job_id, session->client_id, session->heartbeat_every);

  // Zero while the server answers; when it first stopped answering otherwise.
  Clock::time_point unreachable_since{};
  // The last round's global model, refilled in place by the next download.
  core::ParameterSet model_buffer;
  for (;;) {
    grpc::ClientContext context;
    v1::TaskRequest request;
    request.set_job_id(session->job_id);
    request.set_client_id(session->client_id);
    request.set_wait_ms(10000);
    std::unique_ptr<grpc::ClientReader<v1::TaskMessage>> reader = stub->PullTask(&context, request);
    v1::TaskMessage message;
    if (!reader->Read(&message) || !message.has_header()) {
      const grpc::Status s = reader->Finish();
      if (Retryable(s) || s.ok()) {
        // The server may be restarting: keep trying for a while, re-joining once it is back.
        if (unreachable_since == Clock::time_point{}) {
          unreachable_since = Clock::now();
          spdlog::warn("job={} site={} server unreachable ({}); retrying", session->job_id, options.site,
                       s.error_message());
        }
        if (Clock::now() - unreachable_since > std::chrono::duration<double>(options.connect_timeout_s)) {
          return FromGrpc(s, "server unreachable");
        }
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        absl::StatusOr<Session> rejoined = JoinWithRetry(*stub, options, num_samples);
        if (!rejoined.ok()) return rejoined.status();
        session = std::move(rejoined);  // new keys: the old session's are wiped
        continue;
      }
      return FromGrpc(s, "pulling a task");
    }
    if (unreachable_since != Clock::time_point{}) {
      unreachable_since = Clock::time_point{};
      spdlog::info("job={} site={} server reachable again", session->job_id, options.site);
    }
    const v1::TaskHeader header = message.header();
    if (header.kind() == v1::TaskHeader::WAIT) {
      (void)reader->Finish();
      continue;
    }
    if (header.kind() == v1::TaskHeader::DONE) {
      (void)reader->Finish();
      if (header.message().find("has not joined") != std::string::npos) {
        // The server restarted and forgot us: join again.
        absl::StatusOr<Session> rejoined = JoinWithRetry(*stub, options, num_samples);
        if (!rejoined.ok()) return rejoined.status();
        session = std::move(rejoined);  // new keys: the old session's are wiped
        continue;
      }
      spdlog::info("job={} site={} done: {}", session->job_id, options.site, header.message());
      return header.message().rfind("job failed", 0) == 0 ? absl::AbortedError(header.message()) : absl::OkStatus();
    }
    // TRAIN: assemble the global model as its chunks arrive.
    absl::StatusOr<core::Manifest> manifest = wire::FromProto(header.manifest());
    if (!manifest.ok()) return manifest.status();
    // Sealed for this client: each chunk opens only in this round, at this model version
    // and at its place. Opened straight into last round's buffer when the layout is the
    // same, instead of faulting in a fresh zero-filled model every round.
    const std::shared_ptr<const core::ChunkCodec> opener =
        session->sealing->StreamOpener(header.round(), header.model_version(), header.chunk_count());
    core::ParameterSetAssembler assembler(*manifest, header.chunk_count(), header.chunk_bytes(), opener.get(),
                                          std::move(model_buffer));
    absl::Status download = absl::OkStatus();
    while (download.ok() && reader->Read(&message)) {
      const v1::Chunk& chunk = message.chunk();
      download = assembler.Add(chunk.index(), chunk.count(), std::as_bytes(std::span(chunk.data().data(), chunk.data().size())));
    }
    const grpc::Status finished = reader->Finish();
    if (!finished.ok()) download = FromGrpc(finished, "downloading the global model");
    absl::StatusOr<core::ParameterSet> global =
        download.ok() ? std::move(assembler).Finish() : absl::StatusOr<core::ParameterSet>(download);
    if (!global.ok()) {
      spdlog::warn("job={} round={} site={} model download failed: {}", session->job_id, header.round(), options.site,
                   std::string(global.status().message()));
      continue;
    }
    absl::StatusOr<core::TrainingConfig> config =
        core::ParseTrainingConfig(nlohmann::json::parse(header.training_config_json(), nullptr, false));
    if (!config.ok()) return config.status();
    training::SetTrainingThreads(options.threads > 0 ? options.threads : static_cast<int>(config->threads));
    spdlog::info("job={} round={}/{} site={} training ({} local epochs, lr {})", session->job_id, header.round(),
                 header.total_rounds(), options.site, config->local_epochs, config->learning_rate);
    // The job's "privacy" section; a server that sends none runs no DP.
    absl::StatusOr<core::PrivacyConfig> privacy =
        header.privacy_config_json().empty()
            ? core::PrivacyConfig{}
            : core::ParsePrivacyConfig(nlohmann::json::parse(header.privacy_config_json(), nullptr, false));
    if (!privacy.ok()) return privacy.status();
    // DP-SGD spends the site's budget: the spend is on disk in its ledger before training
    // starts, and a round that would exceed the budget is declined instead.
    std::optional<v1::PrivacySpend> spend;
    if (privacy->mechanism == "dp_sgd") {
      absl::StatusOr<training::DpSgdSpend> plan =
          training::PlanDpSgdRound(*privacy, *config, num_samples, header.total_rounds());
      if (!plan.ok()) return plan.status();
      absl::StatusOr<privacy::SpendCheck> reserved = ledger->Reserve(
          training::SpendRequestFor(*plan, session->job_id, static_cast<int64_t>(header.round())),
          {privacy->target_epsilon, privacy->target_delta});
      if (!reserved.ok()) {
        const bool refusal = reserved.status().code() == absl::StatusCode::kResourceExhausted ||
                             reserved.status().code() == absl::StatusCode::kFailedPrecondition;
        if (!refusal) return reserved.status();
        const std::string why = absl::StrCat("privacy budget: ", reserved.status().message());
        spdlog::warn("job={} round={} site={} will not train: {}", session->job_id, header.round(), options.site, why);
        grpc::ClientContext decline_context;
        decline_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::DeclineRequest decline;
        decline.set_job_id(session->job_id);
        decline.set_client_id(session->client_id);
        decline.set_round(header.round());
        decline.set_reason(why);
        v1::DeclineReply declined;
        if (const grpc::Status s = stub->Decline(&decline_context, decline, &declined); !s.ok()) {
          spdlog::warn("job={} site={} could not tell the server: {}", session->job_id, options.site, s.error_message());
        }
        continue;  // the server no longer selects this site; wait for the job to end
      }
      spend.emplace();
      spend->set_sampling_rate(plan->sampling_rate);
      spend->set_noise_multiplier(plan->noise_multiplier);
      spend->set_steps(plan->steps);
      spend->set_clip_norm(plan->clip_norm);
      spend->set_epsilon_after(reserved->epsilon_after);
      spdlog::info("job={} round={} site={} privacy ledger {}: epsilon {:.3f} of {} after this round",
                   session->job_id, header.round(), options.site, ledger->path().string(), reserved->epsilon_after,
                   privacy->target_epsilon);
    }
    absl::StatusOr<training::RoundResult> result =
        (*trainer)->TrainRound(*global, *config, header.round(), header.total_rounds(), *privacy);
    if (!result.ok()) return result.status();
    if (const std::optional<training::DpSgdSpend>& spent = result->dp_sgd) {
      spdlog::info("job={} round={} site={} DP-SGD: {} steps at sampling rate {:.5f}, noise multiplier {:.4f}, "
                   "clip norm {} (epsilon {:.3f} at delta {} for the whole job)",
                   session->job_id, header.round(), options.site, spent->steps, spent->sampling_rate,
                   spent->noise_multiplier, spent->clip_norm, spent->job_epsilon, privacy->target_delta);
    }
    const core::TrainMetrics& m = result->metrics;
    spdlog::info("job={} round={} site={} trained {} steps in {:.1f} s: train loss {:.4f}, held-out accuracy {:.4f}",
                 session->job_id, header.round(), options.site, m.steps, m.train_seconds, m.train_loss,
                 m.eval_accuracy);
    const absl::Status pushed =
        PushUpdate(*stub, *session, header, *result, num_samples, header.chunk_bytes(), spend);
    if (!pushed.ok()) {
      spdlog::warn("job={} round={} site={} {}", session->job_id, header.round(), options.site,
                   std::string(pushed.message()));
    }
    model_buffer = std::move(*global);
  }
}

}  // namespace cohort::client
