#include "server/grpc_services.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/chunking.h"
#include "absl/strings/str_join.h"
#include "proto/convert.h"
#include "proto/credentials.h"

namespace cohort::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status IdentifyCaller(const grpc::ServerContext& context, bool require_certificate,
                            std::initializer_list<crypto::Role> roles, const std::string& claimed,
                            std::string* caller) {
  if (!require_certificate) {
    *caller = claimed;
    return grpc::Status::OK;
  }
  absl::StatusOr<crypto::CertificateIdentity> identity = wire::PeerIdentity(context);
  if (!identity.ok()) return ToGrpcStatus(identity.status());
  if (std::find(roles.begin(), roles.end(), identity->role) == roles.end()) {
    std::vector<std::string> allowed;
    for (crypto::Role r : roles) allowed.emplace_back(crypto::RoleName(r));
    const std::string message =
        absl::StrCat(identity->name, " (role ", std::string(crypto::RoleName(identity->role)),
                     ") may not make this call: it needs role ", absl::StrJoin(allowed, " or "));
    spdlog::warn("access denied: {}", message);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, message);
  }
  if (!claimed.empty() && claimed != identity->name) {
    const std::string message = absl::StrCat("the certificate of ", identity->name, " cannot act as ", claimed);
    spdlog::warn("access denied: {}", message);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, message);
  }
  *caller = identity->name;
  return grpc::Status::OK;
}

grpc::Status FederationService::CheckJob(const std::string& job_id) const {
  if (!job_id.empty() && job_id != job_->job_id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("job \"", job_id, "\" is not served here (this server runs \"", job_->job_id(), "\")"));
  }
  return grpc::Status::OK;
}

grpc::Status FederationService::Join(grpc::ServerContext* context, const v1::JoinRequest* request, v1::JoinReply* reply) {
  if (grpc::Status s = CheckJob(request->job_id()); !s.ok()) return s;
  std::string site;
  if (grpc::Status s = IdentifyCaller(*context, require_certificate_, {crypto::Role::kSite}, request->site(), &site);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> client_id = job_->Join(site, request->num_samples());
  if (!client_id.ok()) return ToGrpcStatus(client_id.status());
  reply->set_job_id(job_->job_id());
  reply->set_client_id(*client_id);
  reply->set_model_config_json(job_->config().model_config.dump());
  reply->set_heartbeat_interval_ms(
      static_cast<uint32_t>(std::max(100.0, job_->config().federation.heartbeat_timeout_s * 1000 / 4)));
  return grpc::Status::OK;
}

grpc::Status FederationService::PullTask(grpc::ServerContext* context, const v1::TaskRequest* request,
                                         grpc::ServerWriter<v1::TaskMessage>* writer) {
  if (grpc::Status s = CheckJob(request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s =
          IdentifyCaller(*context, require_certificate_, {crypto::Role::kSite}, request->client_id(), &client);
      !s.ok()) {
    return s;
  }
  const auto wait = std::chrono::milliseconds(std::min<uint32_t>(request->wait_ms(), 30000));
  const Task task = job_->WaitForTask(client, wait);
  v1::TaskMessage message;
  v1::TaskHeader* header = message.mutable_header();
  header->set_round(task.round);
  header->set_total_rounds(task.total_rounds);
  header->set_message(task.message);
  switch (task.kind) {
    case Task::Kind::kWait: header->set_kind(v1::TaskHeader::WAIT); break;
    case Task::Kind::kDone: header->set_kind(v1::TaskHeader::DONE); break;
    case Task::Kind::kTrain: header->set_kind(v1::TaskHeader::TRAIN); break;
  }
  if (task.kind != Task::Kind::kTrain) {
    writer->Write(message);
    return grpc::Status::OK;
  }
  const size_t chunk_bytes = static_cast<size_t>(job_->config().federation.chunk_bytes);
  const std::span<const std::byte> bytes = task.model->bytes();
  const uint32_t count = core::ChunkCount(bytes.size(), chunk_bytes);
  header->set_model_version(task.model_version);
  header->set_training_config_json(task.training_config_json);
  wire::ToProto(task.model->manifest(), header->mutable_manifest());
  header->set_chunk_count(count);
  header->set_chunk_bytes(static_cast<uint32_t>(chunk_bytes));
  if (!writer->Write(message)) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "client went away");
  v1::TaskMessage chunk_message;
  v1::Chunk* chunk = chunk_message.mutable_chunk();
  for (uint32_t i = 0; i < count; ++i) {
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled");
    const std::span<const std::byte> piece = core::ChunkOf(bytes, i, chunk_bytes);
    chunk->set_index(i);
    chunk->set_count(count);
    chunk->set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
    if (!writer->Write(chunk_message)) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "client went away");
  }
  return grpc::Status::OK;
}

grpc::Status FederationService::PushUpdate(grpc::ServerContext* context, grpc::ServerReader<v1::UpdateMessage>* reader,
                                           v1::UpdateReceipt* receipt) {
  v1::UpdateMessage message;
  if (!reader->Read(&message) || !message.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "an update stream must start with its header");
  }
  const v1::UpdateHeader& h = message.header();
  if (grpc::Status s = CheckJob(h.job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = IdentifyCaller(*context, require_certificate_, {crypto::Role::kSite}, h.client_id(), &client);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<core::Manifest> manifest = wire::FromProto(h.manifest());
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  UpdateHeader header;
  header.client_id = client;
  header.round = h.round();
  header.base_model_version = h.base_model_version();
  header.manifest = std::move(*manifest);
  header.num_samples = h.num_samples();
  header.chunk_count = h.chunk_count();
  header.chunk_bytes = h.chunk_bytes();
  header.metrics = wire::FromProto(h.metrics());

  absl::StatusOr<core::UpdateReceiver> receiver = job_->BeginUpdate(header);
  if (!receiver.ok()) {
    // Refused before any byte was taken: the client stays in the round only if the
    // refusal was not about its own update (wrong round or unknown client change nothing).
    if (receiver.status().code() == absl::StatusCode::kInvalidArgument) job_->RejectUpdate(header, receiver.status());
    return ToGrpcStatus(receiver.status());
  }
  while (reader->Read(&message)) {
    if (!message.has_chunk()) {
      const absl::Status bad = absl::InvalidArgumentError("update stream: a second header after the first");
      job_->RejectUpdate(header, bad);
      return ToGrpcStatus(bad);
    }
    const v1::Chunk& chunk = message.chunk();
    const absl::Status added =
        receiver->AddChunk(chunk.index(), chunk.count(),
                           std::as_bytes(std::span(chunk.data().data(), chunk.data().size())));
    if (!added.ok()) {
      const absl::Status bad = absl::InvalidArgumentError(
          absl::StrCat("update from ", header.client_id, " for round ", header.round, " rejected: ", added.message()));
      job_->RejectUpdate(header, bad);
      return ToGrpcStatus(bad);
    }
  }
  if (absl::Status s = job_->CommitUpdate(header, std::move(*receiver)); !s.ok()) {
    return ToGrpcStatus(absl::Status(s.code(), absl::StrCat("update from ", header.client_id, " for round ",
                                                            header.round, " rejected: ", s.message())));
  }
  receipt->set_accepted(true);
  receipt->set_message(absl::StrCat("update for round ", header.round, " accepted"));
  return grpc::Status::OK;
}

grpc::Status FederationService::Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                                          v1::HeartbeatReply* reply) {
  if (grpc::Status s = CheckJob(request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s =
          IdentifyCaller(*context, require_certificate_, {crypto::Role::kSite}, request->client_id(), &client);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = job_->Heartbeat(client); !s.ok()) return ToGrpcStatus(s);
  const nlohmann::json status = job_->Status();
  reply->set_job_state(status["state"].get<std::string>());
  reply->set_round(status["round"].get<uint64_t>());
  return grpc::Status::OK;
}

grpc::Status AdminService::GetStatus(grpc::ServerContext* context, const v1::StatusRequest*, v1::StatusReply* reply) {
  std::string caller;
  if (grpc::Status s = IdentifyCaller(*context, require_certificate_, {crypto::Role::kAdmin, crypto::Role::kAuditor},
                                      "", &caller);
      !s.ok()) {
    return s;
  }
  const nlohmann::json status = job_->Status();
  reply->set_job_id(status["job_id"].get<std::string>());
  reply->set_state(status["state"].get<std::string>());
  reply->set_round(status["round"].get<uint64_t>());
  reply->set_total_rounds(static_cast<uint32_t>(status["total_rounds"].get<int64_t>()));
  for (const auto& c : status["clients"]) {
    v1::ClientStatus* client = reply->add_clients();
    client->set_client_id(c["client_id"].get<std::string>());
    client->set_state(c["state"].get<std::string>());
    client->set_num_samples(c["num_samples"].get<uint64_t>());
    client->set_last_seen_ms_ago(c["last_seen_ms_ago"].get<int64_t>());
  }
  reply->set_summary_json(status["summary"].dump());
  return grpc::Status::OK;
}

}  // namespace cohort::server
