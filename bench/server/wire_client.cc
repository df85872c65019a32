#include "bench/server/wire_client.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "bench/server/bench_support.h"
#include "core/chunking.h"
#include "crypto/key_agreement.h"
#include "proto/convert.h"
#include "proto/stream_settings.h"

namespace cohort::bench {
namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace

WireClient::WireClient(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  core::KeepFreedMemoryForChunkStreams();  // as the agent does before it connects
  grpc::ChannelArguments args;
  wire::ApplyChunkStreamSettings(args);  // as the agent
  // Channels with equal arguments share one connection inside a process; each simulated
  // client gets its own, as separate sites would.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(address, credentials ? credentials : grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Federation::NewStub(channel_);
}

absl::Status WireClient::Connect(std::chrono::seconds timeout) {
  if (channel_->WaitForConnected(std::chrono::system_clock::now() + timeout)) return absl::OkStatus();
  return absl::UnavailableError("the benchmark server did not accept a connection");
}

absl::StatusOr<WireSession> WireClient::Join(const std::string& site, uint64_t num_samples) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  context.set_wait_for_ready(true);
  const crypto::X25519KeyPair own = crypto::GenerateX25519KeyPair();
  v1::JoinRequest request;
  request.set_site(site);
  request.set_num_samples(num_samples);
  request.set_client_public_key(reinterpret_cast<const char*>(own.public_key.data()), own.public_key.size());
  v1::JoinReply reply;
  const grpc::Status s = stub_->Join(&context, request, &reply);
  if (!s.ok()) return FromGrpc(s, absl::StrCat("joining as ", site));
  absl::StatusOr<std::shared_ptr<wire::SealedSession>> sealing = wire::SealedSession::Agree(
      own, reply.server_public_key(), crypto::Side::kClient, reply.job_id(), reply.client_id());
  if (!sealing.ok()) return sealing.status();
  return WireSession{reply.job_id(), reply.client_id(), std::move(*sealing)};
}

absl::StatusOr<PulledTask> WireClient::PullTrainTask(const WireSession& session, core::ParameterSet* keep) {
  for (;;) {
    grpc::ClientContext context;
    v1::TaskRequest request;
    request.set_job_id(session.job_id);
    request.set_client_id(session.client_id);
    request.set_wait_ms(10000);
    std::unique_ptr<grpc::ClientReader<v1::TaskMessage>> reader = stub_->PullTask(&context, request);
    v1::TaskMessage message;
    if (!reader->Read(&message) || !message.has_header()) {
      return FromGrpc(reader->Finish(), "pulling a task");
    }
    PulledTask task;
    task.header = message.header();
    if (task.header.kind() == v1::TaskHeader::WAIT) {
      (void)reader->Finish();
      continue;
    }
    if (task.header.kind() != v1::TaskHeader::TRAIN) {
      (void)reader->Finish();
      return absl::FailedPreconditionError(absl::StrCat("expected a TRAIN task, got: ", task.header.message()));
    }
    const Clock::time_point start = Clock::now();
    absl::StatusOr<core::Manifest> manifest = wire::FromProto(task.header.manifest());
    if (!manifest.ok()) return manifest.status();
    const std::shared_ptr<const core::ChunkCodec> opener =
        session.sealing->StreamOpener(task.header.round(), task.header.model_version(), task.header.chunk_count());
    std::optional<core::ParameterSetAssembler> assembler;
    if (keep) {
      assembler.emplace(*manifest, task.header.chunk_count(), task.header.chunk_bytes(), opener.get(),
                        std::move(*keep));
    }
    core::ChunkSequence sequence(manifest->total_bytes(), task.header.chunk_count(), task.header.chunk_bytes());
    absl::Status download = absl::OkStatus();
    while (download.ok() && reader->Read(&message)) {
      const v1::Chunk& chunk = message.chunk();
      const auto data = std::as_bytes(std::span(chunk.data().data(), chunk.data().size()));
      if (keep) {
        download = assembler->Add(chunk.index(), chunk.count(), data);
      } else {
        absl::StatusOr<size_t> size = core::PlainChunkSize(opener.get(), chunk.index(), data.size());
        download = size.ok() ? sequence.CheckNext(chunk.index(), chunk.count(), *size) : size.status();
        if (download.ok()) sequence.Advance(*size);
      }
      task.model_bytes += data.size();
    }
    const grpc::Status finished = reader->Finish();
    if (!finished.ok()) return FromGrpc(finished, "downloading the global model");
    if (!download.ok()) return download;
    if (keep) {
      absl::StatusOr<core::ParameterSet> model = std::move(*assembler).Finish();
      if (!model.ok()) return model.status();
      *keep = std::move(*model);
    } else if (absl::Status s = sequence.CheckComplete(); !s.ok()) {
      return s;
    }
    task.download_seconds = SecondsSince(start);
    return task;
  }
}

absl::Status WireClient::PushUpdate(const WireSession& session, const v1::TaskHeader& task,
                                    const core::ParameterSet& update, uint64_t num_samples, size_t chunk_bytes) {
  return Stream(session.job_id, session.client_id, task.round(), task.model_version(), update, num_samples,
                chunk_bytes, session.sealing.get());
}

absl::Status WireClient::PushUnsealedUpdate(const std::string& client_id, const core::ParameterSet& update,
                                            size_t chunk_bytes) {
  return Stream("", client_id, 1, 0, update, 1000, chunk_bytes, nullptr);
}

absl::Status WireClient::Stream(const std::string& job_id, const std::string& client_id, uint64_t round,
                                uint64_t model_version, const core::ParameterSet& update, uint64_t num_samples,
                                size_t chunk_bytes, wire::SealedSession* sealing) {
  grpc::ClientContext context;
  v1::UpdateReceipt receipt;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateMessage>> writer = stub_->PushUpdate(&context, &receipt);
  const std::span<const std::byte> bytes = update.bytes();
  const uint32_t count = core::ChunkCount(bytes.size(), chunk_bytes);
  v1::UpdateMessage message;
  v1::UpdateHeader* header = message.mutable_header();
  header->set_job_id(job_id);
  header->set_client_id(client_id);
  header->set_round(round);
  header->set_base_model_version(model_version);
  wire::ToProto(update.manifest(), header->mutable_manifest());
  header->set_num_samples(num_samples);
  header->set_chunk_count(count);
  header->set_chunk_bytes(static_cast<uint32_t>(chunk_bytes));
  wire::ToProto(core::TrainMetrics{}, header->mutable_metrics());
  bool open = writer->Write(message);
  v1::UpdateMessage chunk_message;
  v1::Chunk* chunk = chunk_message.mutable_chunk();
  absl::Status sealed = absl::OkStatus();
  for (uint32_t i = 0; open && i < count; ++i) {
    const std::span<const std::byte> piece = core::ChunkOf(bytes, i, chunk_bytes);
    chunk->set_index(i);
    chunk->set_count(count);
    if (sealing != nullptr) {
      sealed = sealing->SealChunk(round, model_version, i, count, piece, chunk->mutable_data());
      if (!sealed.ok()) break;
    } else {
      chunk->set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
    }
    open = writer->Write(chunk_message);
  }
  if (!sealed.ok()) context.TryCancel();
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  if (!sealed.ok()) return sealed;
  if (!s.ok()) return FromGrpc(s, absl::StrCat("pushing the update for round ", round));
  if (!receipt.accepted()) return absl::InternalError(absl::StrCat("update not accepted: ", receipt.message()));
  return absl::OkStatus();
}

}  // namespace cohort::bench
