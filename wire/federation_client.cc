#include "wire/federation_client.h"

#include "absl/strings/str_cat.h"
#include "core/chunking.h"
#include "crypto/startup_kit.h"
#include "wire/convert.h"
#include "wire/credentials.h"
#include "wire/stream_settings.h"

namespace cohort::wire {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

std::chrono::system_clock::time_point After(std::chrono::milliseconds timeout) {
  return std::chrono::system_clock::now() + timeout;
}

// The outcome of an update stream: the server's status, then its receipt.
absl::Status UpdateOutcome(const grpc::Status& s, const v1::UpdateReceipt& receipt, uint64_t round) {
  if (!s.ok()) return FromGrpc(s, absl::StrCat("pushing the update for round ", round));
  if (!receipt.accepted()) {
    return absl::InternalError(absl::StrCat("pushing the update for round ", round, ": not accepted: ", receipt.message()));
  }
  return absl::OkStatus();
}

std::span<const std::byte> BytesOf(const std::string& data) { return std::as_bytes(std::span(data.data(), data.size())); }

// Reads the TRAIN stream's chunks after its header into `model` (or only checks them when
// `model` is null). Returns why the download failed, OK when it is whole.
absl::Status ReadModel(grpc::ClientReader<v1::TaskMessage>& reader, const Session& session, const PullOptions& options,
                       const core::Manifest& manifest, core::ParameterSet* model, PulledTask& task) {
  const v1::TaskHeader& header = task.header;
  // Sealed for this client: each chunk opens only in this round, at this model version
  // and at its place.
  const std::shared_ptr<const core::ChunkCodec> opener =
      session.sealing->StreamOpener(header.round(), header.model_version(), header.chunk_count());
  std::optional<core::ParameterSetAssembler> assembler;
  std::optional<core::ChunkSequence> sequence;
  if (model != nullptr) {
    assembler.emplace(manifest, header.chunk_count(), header.chunk_bytes(), opener.get(), std::move(*model));
    *model = core::ParameterSet();
  } else {
    sequence.emplace(manifest.total_bytes(), header.chunk_count(), header.chunk_bytes());
  }
  absl::Status download = absl::OkStatus();
  v1::TaskMessage message;
  while (download.ok() && reader.Read(&message)) {
    const v1::Chunk& chunk = message.chunk();
    if (options.on_chunk) options.on_chunk(chunk);
    const std::span<const std::byte> data = BytesOf(chunk.data());
    task.model_bytes += data.size();
    if (assembler) {
      download = assembler->Add(chunk.index(), chunk.count(), data);
    } else {
      absl::StatusOr<size_t> size = core::PlainChunkSize(opener.get(), chunk.index(), data.size());
      download = size.ok() ? sequence->CheckNext(chunk.index(), chunk.count(), *size) : size.status();
      if (download.ok()) sequence->Advance(*size);
    }
  }
  if (!download.ok()) return download;
  if (!assembler) return sequence->CheckComplete();
  absl::StatusOr<core::ParameterSet> assembled = std::move(*assembler).Finish();
  if (!assembled.ok()) return assembled.status();
  *model = std::move(*assembled);
  return absl::OkStatus();
}

}  // namespace

UpdateInfo UpdateInfoFor(const v1::TaskHeader& task, uint64_t num_samples) {
  UpdateInfo info;
  info.round = task.round();
  info.base_model_version = task.model_version();
  info.num_samples = num_samples;
  info.chunk_bytes = task.chunk_bytes();
  return info;
}

absl::StatusOr<SiteConnection> SiteConnectionFromKit(const std::string& kit_dir) {
  absl::StatusOr<crypto::StartupKit> kit = crypto::LoadStartupKit(kit_dir);
  if (!kit.ok()) return kit.status();
  if (kit->role != crypto::Role::kSite) {
    return absl::InvalidArgumentError(absl::StrCat("startup kit ", kit_dir, " belongs to ", kit->name, " (role ",
                                                   std::string(crypto::RoleName(kit->role)),
                                                   "); a client needs a site kit"));
  }
  return SiteConnection{kit->name, Connection{kit->server_address, ChannelCredentialsFromKit(*kit)}};
}

FederationClient::FederationClient(const Connection& connection) : address_(connection.address) {
  core::KeepFreedMemoryForChunkStreams();
  grpc::ChannelArguments args;
  ApplyChunkStreamSettings(args);
  // Channels with equal arguments share one connection inside a process.
  if (connection.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(
      address_, connection.credentials ? connection.credentials : grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Federation::NewStub(channel_);
}

absl::Status FederationClient::WaitForConnection(std::chrono::milliseconds timeout) {
  if (channel_->WaitForConnected(After(timeout))) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("no connection to ", address_, " within ", timeout.count(), " ms"));
}

absl::StatusOr<Session> FederationClient::Join(const std::string& site, uint64_t num_samples,
                                               const JoinOptions& options) {
  grpc::ClientContext context;
  context.set_deadline(After(options.timeout));
  context.set_wait_for_ready(options.wait_for_ready);
  // A fresh key pair for every Join: each session has keys of its own. Its secret key is
  // wiped when `fresh` goes out of scope, once the session keys are derived.
  std::optional<crypto::X25519KeyPair> fresh;
  if (options.own_key == nullptr) fresh.emplace(crypto::GenerateX25519KeyPair());
  const crypto::X25519KeyPair& own = options.own_key ? *options.own_key : *fresh;
  v1::JoinRequest request;
  request.set_job_id(options.job_id);
  request.set_site(site);
  request.set_num_samples(num_samples);
  if (options.ledger) *request.mutable_ledger() = *options.ledger;
  if (options.public_key_as_sent != nullptr) {
    request.set_client_public_key(*options.public_key_as_sent);
  } else {
    request.set_client_public_key(reinterpret_cast<const char*>(own.public_key.data()), own.public_key.size());
  }
  v1::JoinReply reply;
  if (const grpc::Status s = stub_->Join(&context, request, &reply); !s.ok()) {
    return FromGrpc(s, absl::StrCat("joining the job at ", address_, " as ", site));
  }
  Session session{reply.job_id(),
                  reply.client_id(),
                  reply.model_config_json(),
                  std::chrono::milliseconds(std::max<uint32_t>(100, reply.heartbeat_interval_ms())),
                  reply.server_public_key(),
                  nullptr};
  absl::StatusOr<std::shared_ptr<SealedSession>> sealing =
      SealedSession::Agree(own, reply.server_public_key(), crypto::Side::kClient, reply.job_id(), reply.client_id());
  if (!sealing.ok()) {
    return absl::Status(sealing.status().code(), absl::StrCat("agreeing session keys with ", address_, " as ", site,
                                                              ": ", sealing.status().message()));
  }
  session.sealing = std::move(*sealing);
  return session;
}

absl::StatusOr<PulledTask> FederationClient::PullTask(const Session& session, core::ParameterSet* model,
                                                      const PullOptions& options) {
  grpc::ClientContext context;
  v1::TaskRequest request;
  request.set_job_id(session.job_id);
  request.set_client_id(session.client_id);
  request.set_wait_ms(static_cast<uint32_t>(options.wait.count()));
  std::unique_ptr<grpc::ClientReader<v1::TaskMessage>> reader = stub_->PullTask(&context, request);
  v1::TaskMessage message;
  if (!reader->Read(&message) || !message.has_header()) {
    const grpc::Status s = reader->Finish();
    if (s.ok()) return absl::UnavailableError(absl::StrCat("pulling a task from ", address_, ": no task header came"));
    return FromGrpc(s, absl::StrCat("pulling a task from ", address_));
  }
  PulledTask task;
  task.header = std::move(*message.mutable_header());
  if (task.header.kind() != v1::TaskHeader::TRAIN) {
    (void)reader->Finish();
    return task;
  }
  const Clock::time_point start = Clock::now();
  // A task whose manifest does not parse cannot be trained on, now or when asked again.
  absl::StatusOr<core::Manifest> manifest = FromProto(task.header.manifest());
  if (!manifest.ok()) {
    context.TryCancel();
    (void)reader->Finish();
    return absl::Status(manifest.status().code(), absl::StrCat("the task for round ", task.header.round(), " from ",
                                                               address_, ": ", manifest.status().message()));
  }
  task.download = ReadModel(*reader, session, options, *manifest, model, task);
  if (!task.download.ok()) context.TryCancel();
  const grpc::Status finished = reader->Finish();
  if (task.download.ok() && !finished.ok()) {
    task.download = FromGrpc(finished, absl::StrCat("downloading the global model of round ", task.header.round()));
  }
  if (!task.download.ok() && model != nullptr) *model = core::ParameterSet();
  task.download_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return task;
}

absl::StatusOr<PulledTask> FederationClient::PullTrainTask(const Session& session, core::ParameterSet* model) {
  for (;;) {
    absl::StatusOr<PulledTask> task = PullTask(session, model);
    if (!task.ok()) return task.status();
    switch (task->header.kind()) {
      case v1::TaskHeader::TRAIN:
        if (!task->download.ok()) return task->download;
        return task;
      case v1::TaskHeader::DONE:
        return absl::FailedPreconditionError(
            absl::StrCat("expected a TRAIN task for ", session.client_id, ", got DONE: ", task->header.message()));
      default:
        continue;
    }
  }
}

v1::UpdateHeader FederationClient::UpdateHeaderFor(const Session& session, const UpdateInfo& info,
                                                   const core::ParameterSet& delta) {
  v1::UpdateHeader header;
  header.set_job_id(session.job_id);
  header.set_client_id(session.client_id);
  header.set_round(info.round);
  header.set_base_model_version(info.base_model_version);
  ToProto(delta.manifest(), header.mutable_manifest());
  header.set_num_samples(info.num_samples);
  header.set_chunk_count(core::ChunkCount(delta.bytes().size(), info.chunk_bytes));
  header.set_chunk_bytes(static_cast<uint32_t>(info.chunk_bytes));
  ToProto(info.metrics, header.mutable_metrics());
  if (info.privacy_spend) *header.mutable_privacy_spend() = *info.privacy_spend;
  if (info.ledger) *header.mutable_ledger() = *info.ledger;
  return header;
}

std::vector<v1::Chunk> FederationClient::PlainUpdateChunks(const UpdateInfo& info, const core::ParameterSet& delta) {
  const std::span<const std::byte> bytes = delta.bytes();
  const uint32_t count = core::ChunkCount(bytes.size(), info.chunk_bytes);
  std::vector<v1::Chunk> chunks(count);
  for (uint32_t i = 0; i < count; ++i) {
    const std::span<const std::byte> piece = core::ChunkOf(bytes, i, info.chunk_bytes);
    chunks[i].set_index(i);
    chunks[i].set_count(count);
    chunks[i].set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
  }
  return chunks;
}

absl::Status FederationClient::SealChunks(SealedSession& sealing, uint64_t round, uint64_t base_model_version,
                                          std::vector<v1::Chunk>& chunks) {
  for (v1::Chunk& chunk : chunks) {
    const std::string plain = chunk.data();
    if (absl::Status s =
            sealing.SealChunk(round, base_model_version, chunk.index(), chunk.count(), BytesOf(plain), chunk.mutable_data());
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status FederationClient::PushUpdate(const Session& session, const UpdateInfo& info,
                                          const core::ParameterSet& delta, uint64_t* bytes_sent) {
  const std::span<const std::byte> bytes = delta.bytes();
  return StreamUpdate(
      UpdateHeaderFor(session, info, delta), [&](uint32_t i) { return core::ChunkOf(bytes, i, info.chunk_bytes); },
      session.sealing.get(), bytes_sent);
}

absl::Status FederationClient::PushEncodedUpdate(const Session& session, const UpdateInfo& info,
                                                 const core::EncodedUpdate& update, uint64_t* bytes_sent) {
  if (update.chunk_bytes != info.chunk_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("update for round ", info.round, " was compressed in chunks of ",
                                                   update.chunk_bytes, " bytes; the task's are ", info.chunk_bytes));
  }
  v1::UpdateHeader header;
  header.set_job_id(session.job_id);
  header.set_client_id(session.client_id);
  header.set_round(info.round);
  header.set_base_model_version(info.base_model_version);
  ToProto(update.manifest, header.mutable_manifest());
  header.set_num_samples(info.num_samples);
  header.set_chunk_count(static_cast<uint32_t>(update.chunks.size()));
  header.set_chunk_bytes(static_cast<uint32_t>(info.chunk_bytes));
  ToProto(info.metrics, header.mutable_metrics());
  if (info.privacy_spend) *header.mutable_privacy_spend() = *info.privacy_spend;
  if (info.ledger) *header.mutable_ledger() = *info.ledger;
  ToProto(update.encoding, header.mutable_encoding());
  return StreamUpdate(
      std::move(header),
      [&](uint32_t i) { return std::as_bytes(std::span<const char>(update.chunks[i])); }, session.sealing.get(),
      bytes_sent);
}

absl::Status FederationClient::PushUnsealedUpdate(const std::string& client_id, const UpdateInfo& info,
                                                  const core::ParameterSet& delta) {
  Session unnamed;
  unnamed.client_id = client_id;
  const std::span<const std::byte> bytes = delta.bytes();
  return StreamUpdate(
      UpdateHeaderFor(unnamed, info, delta), [&](uint32_t i) { return core::ChunkOf(bytes, i, info.chunk_bytes); },
      nullptr, nullptr);
}

absl::Status FederationClient::StreamUpdate(v1::UpdateHeader header,
                                            const std::function<std::span<const std::byte>(uint32_t)>& chunk_payload,
                                            SealedSession* sealing, uint64_t* bytes_sent) {
  const uint64_t round = header.round();
  const uint64_t version = header.base_model_version();
  const uint32_t count = header.chunk_count();
  grpc::ClientContext context;
  v1::UpdateReceipt receipt;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateMessage>> writer = stub_->PushUpdate(&context, &receipt);
  v1::UpdateMessage message;
  *message.mutable_header() = std::move(header);
  uint64_t sent = message.ByteSizeLong();
  bool open = writer->Write(message);
  // One message for every chunk: each is sealed into the same bytes field, whose buffer
  // is reused, and the seal is the only copy of the chunk's bytes.
  v1::UpdateMessage chunk_message;
  v1::Chunk* chunk = chunk_message.mutable_chunk();
  absl::Status sealed = absl::OkStatus();
  for (uint32_t i = 0; open && i < count; ++i) {
    const std::span<const std::byte> piece = chunk_payload(i);
    chunk->set_index(i);
    chunk->set_count(count);
    if (sealing != nullptr) {
      // Bound to this round, the model version the update was trained on, and its place.
      sealed = sealing->SealChunk(round, version, i, count, piece, chunk->mutable_data());
      if (!sealed.ok()) break;
    } else {
      chunk->set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
    }
    sent += chunk_message.ByteSizeLong();
    open = writer->Write(chunk_message);
  }
  if (!sealed.ok()) context.TryCancel();
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  if (bytes_sent != nullptr) *bytes_sent = sent;
  if (!sealed.ok()) return sealed;
  return UpdateOutcome(s, receipt, round);
}

absl::Status FederationClient::SendUpdate(const v1::UpdateHeader& header, std::span<const v1::Chunk> chunks) {
  grpc::ClientContext context;
  v1::UpdateReceipt receipt;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateMessage>> writer = stub_->PushUpdate(&context, &receipt);
  v1::UpdateMessage message;
  *message.mutable_header() = header;
  bool open = writer->Write(message);
  for (size_t i = 0; open && i < chunks.size(); ++i) {
    *message.mutable_chunk() = chunks[i];
    open = writer->Write(message);
  }
  writer->WritesDone();
  return UpdateOutcome(writer->Finish(), receipt, header.round());
}

absl::Status FederationClient::Heartbeat(const Session& session, std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  context.set_deadline(After(timeout));
  v1::HeartbeatRequest request;
  request.set_job_id(session.job_id);
  request.set_client_id(session.client_id);
  v1::HeartbeatReply reply;
  if (const grpc::Status s = stub_->Heartbeat(&context, request, &reply); !s.ok()) {
    return FromGrpc(s, absl::StrCat("heartbeat of ", session.client_id));
  }
  return absl::OkStatus();
}

absl::Status FederationClient::Decline(const Session& session, uint64_t round, const std::string& reason) {
  grpc::ClientContext context;
  context.set_deadline(After(std::chrono::seconds(10)));
  v1::DeclineRequest request;
  request.set_job_id(session.job_id);
  request.set_client_id(session.client_id);
  request.set_round(round);
  request.set_reason(reason);
  v1::DeclineReply reply;
  if (const grpc::Status s = stub_->Decline(&context, request, &reply); !s.ok()) {
    return FromGrpc(s, absl::StrCat("declining round ", round, " as ", session.client_id));
  }
  return absl::OkStatus();
}

}  // namespace cohort::wire
