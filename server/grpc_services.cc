#include "server/grpc_services.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/chunking.h"
#include "absl/strings/str_join.h"
#include "proto/convert.h"
#include "proto/credentials.h"
#include "server/access_policy.h"

namespace cohort::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

namespace {

constexpr std::string_view kJoin = "/cohort.v1.Federation/Join";
constexpr std::string_view kPullTask = "/cohort.v1.Federation/PullTask";
constexpr std::string_view kPushUpdate = "/cohort.v1.Federation/PushUpdate";
constexpr std::string_view kHeartbeat = "/cohort.v1.Federation/Heartbeat";
constexpr std::string_view kDecline = "/cohort.v1.Federation/Decline";
constexpr std::string_view kGetStatus = "/cohort.v1.Admin/GetStatus";
constexpr std::string_view kListJobs = "/cohort.v1.Admin/ListJobs";
constexpr std::string_view kStartJob = "/cohort.v1.Admin/StartJob";
constexpr std::string_view kStopJob = "/cohort.v1.Admin/StopJob";
constexpr std::string_view kSetParameter = "/cohort.v1.Admin/SetParameter";
constexpr std::string_view kListParticipants = "/cohort.v1.Admin/ListParticipants";
constexpr std::string_view kAddParticipant = "/cohort.v1.Admin/AddParticipant";
constexpr std::string_view kRevokeParticipant = "/cohort.v1.Admin/RevokeParticipant";
constexpr std::string_view kReadAuditLog = "/cohort.v1.Admin/ReadAuditLog";

grpc::Status Deny(FederatedJob& job, const Caller& caller, std::string_view method, const absl::Status& why) {
  const std::string message(why.message());
  spdlog::warn("job={} access denied on {}: {}", job.job_id(), std::string(method), message);
  job.RecordDenied(caller.actor(), std::string(method), message);
  return ToGrpcStatus(why);
}

}  // namespace

// Requests name a job; empty means the server's own. Both services check it the same way.
grpc::Status CheckServedJob(const FederatedJob& job, const std::string& job_id) {
  if (!job_id.empty() && job_id != job.job_id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("job \"", job_id, "\" is not served here (this server runs \"", job.job_id(), "\")"));
  }
  return grpc::Status::OK;
}

Actor Caller::actor() const {
  return {identity.empty() ? "anonymous" : identity,
          role ? std::string(crypto::RoleName(*role)) : std::string("unauthenticated")};
}

grpc::Status Authorize(const grpc::ServerContext& context, bool require_certificate, std::string_view method,
                       FederatedJob& job, Caller* caller) {
  if (!require_certificate) {
    caller->identity.clear();
    caller->role.reset();
    return grpc::Status::OK;
  }
  absl::StatusOr<crypto::CertificateIdentity> identity = wire::PeerIdentity(context);
  if (!identity.ok()) {
    caller->identity = context.peer();
    return Deny(job, *caller, method, absl::PermissionDeniedError(std::string(identity.status().message())));
  }
  caller->identity = identity->name;
  caller->role = identity->role;
  if (absl::Status allowed = CheckAccess(identity->name, identity->role, method); !allowed.ok()) {
    return Deny(job, *caller, method, allowed);
  }
  return grpc::Status::OK;
}

grpc::Status ActAsSite(Caller& caller, const std::string& claimed, std::string_view method, FederatedJob& job,
                       std::string* site) {
  if (!caller.role) {
    caller.identity = claimed;  // --insecure: callers are who they say they are
  } else if (!claimed.empty() && claimed != caller.identity) {
    return Deny(job, caller, method,
                absl::PermissionDeniedError(absl::StrCat("the certificate of ", caller.identity, " cannot act as ", claimed)));
  }
  if (absl::Status s = job.CheckParticipant(caller.identity); !s.ok()) return Deny(job, caller, method, s);
  *site = caller.identity;
  return grpc::Status::OK;
}

grpc::Status FederationService::Join(grpc::ServerContext* context, const v1::JoinRequest* request, v1::JoinReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kJoin, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string site;
  if (grpc::Status s = ActAsSite(caller, request->site(), kJoin, *job_, &site); !s.ok()) return s;
  absl::StatusOr<JoinResult> joined = job_->Join(site, request->num_samples(), request->client_public_key());
  if (!joined.ok()) return ToGrpcStatus(joined.status());
  reply->set_job_id(job_->job_id());
  reply->set_client_id(joined->client_id);
  reply->set_server_public_key(joined->server_public_key);
  reply->set_model_config_json(job_->config().model_config.dump());
  reply->set_heartbeat_interval_ms(
      static_cast<uint32_t>(std::max(100.0, job_->config().federation.heartbeat_timeout_s * 1000 / 4)));
  return grpc::Status::OK;
}

grpc::Status FederationService::PullTask(grpc::ServerContext* context, const v1::TaskRequest* request,
                                         grpc::ServerWriter<v1::TaskMessage>* writer) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kPullTask, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller, request->client_id(), kPullTask, *job_, &client); !s.ok()) return s;
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
  header->set_privacy_config_json(task.privacy_config_json);
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
    // Sealed for this client straight into the message: the seal is the only copy.
    if (absl::Status s = task.session->SealChunk(task.round, task.model_version, i, count, piece, chunk->mutable_data());
        !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (!writer->Write(chunk_message)) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "client went away");
  }
  return grpc::Status::OK;
}

grpc::Status FederationService::PushUpdate(grpc::ServerContext* context, grpc::ServerReader<v1::UpdateMessage>* reader,
                                           v1::UpdateReceipt* receipt) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kPushUpdate, *job_, &caller); !s.ok()) return s;
  v1::UpdateMessage message;
  if (!reader->Read(&message) || !message.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "an update stream must start with its header");
  }
  const v1::UpdateHeader& h = message.header();
  if (grpc::Status s = CheckServedJob(*job_, h.job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller, h.client_id(), kPushUpdate, *job_, &client); !s.ok()) return s;
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
  if (h.has_privacy_spend()) {
    const v1::PrivacySpend& p = h.privacy_spend();
    header.privacy_spend =
        SiteSpend{p.sampling_rate(), p.noise_multiplier(), p.steps(), p.clip_norm(), p.epsilon_after()};
  }

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
    // Opened where it arrived: the message is ours until the next Read.
    v1::Chunk& chunk = *message.mutable_chunk();
    std::string& data = *chunk.mutable_data();
    const absl::Status added = receiver->AddChunkInPlace(chunk.index(), chunk.count(),
                                                         std::as_writable_bytes(std::span(data.data(), data.size())));
    if (!added.ok()) {
      // DataLoss when the chunk did not authenticate (tampered, replayed, reordered, or
      // sealed under another key or name); InvalidArgument for the other checks.
      const absl::Status bad =
          absl::Status(added.code() == absl::StatusCode::kDataLoss ? absl::StatusCode::kDataLoss
                                                                    : absl::StatusCode::kInvalidArgument,
                       absl::StrCat("update from ", header.client_id, " for round ", header.round,
                                    " rejected: ", added.message()));
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
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kHeartbeat, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller, request->client_id(), kHeartbeat, *job_, &client); !s.ok()) return s;
  if (absl::Status s = job_->Heartbeat(client); !s.ok()) return ToGrpcStatus(s);
  const nlohmann::json status = job_->Status();
  reply->set_job_state(status["state"].get<std::string>());
  reply->set_round(status["round"].get<uint64_t>());
  return grpc::Status::OK;
}

grpc::Status FederationService::Decline(grpc::ServerContext* context, const v1::DeclineRequest* request,
                                        v1::DeclineReply*) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kDecline, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller, request->client_id(), kDecline, *job_, &client); !s.ok()) return s;
  return ToGrpcStatus(job_->Decline(client, request->round(), request->reason()));
}

grpc::Status AdminService::GetStatus(grpc::ServerContext* context, const v1::StatusRequest*, v1::StatusReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kGetStatus, *job_, &caller); !s.ok()) return s;
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
  reply->set_audit_head(status["audit_head"].get<std::string>());
  reply->set_audit_entries(status["audit_entries"].get<uint64_t>());
  return grpc::Status::OK;
}

grpc::Status AdminService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest*, v1::ListJobsReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kListJobs, *job_, &caller); !s.ok()) return s;
  const nlohmann::json status = job_->Status();
  v1::JobSummary* job = reply->add_jobs();
  job->set_job_id(status["job_id"].get<std::string>());
  job->set_state(status["state"].get<std::string>());
  job->set_round(status["round"].get<uint64_t>());
  job->set_total_rounds(static_cast<uint32_t>(status["total_rounds"].get<int64_t>()));
  return grpc::Status::OK;
}

grpc::Status AdminService::StartJob(grpc::ServerContext* context, const v1::JobControlRequest* request,
                                    v1::JobControlReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kStartJob, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  if (absl::Status s = job_->Start(caller.actor()); !s.ok()) return ToGrpcStatus(s);
  reply->set_message(absl::StrCat("job ", job_->job_id(), " started"));
  return grpc::Status::OK;
}

grpc::Status AdminService::StopJob(grpc::ServerContext* context, const v1::JobControlRequest* request,
                                   v1::JobControlReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kStopJob, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  if (absl::Status s = job_->Stop(caller.actor(), request->reason()); !s.ok()) return ToGrpcStatus(s);
  reply->set_message(absl::StrCat("job ", job_->job_id(), " stops at the next round boundary"));
  return grpc::Status::OK;
}

grpc::Status AdminService::SetParameter(grpc::ServerContext* context, const v1::SetParameterRequest* request,
                                        v1::SetParameterReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kSetParameter, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  const nlohmann::json value = nlohmann::json::parse(request->value_json(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("value for ", request->parameter(), ": expected JSON (0.05, 3, \"cosine\"), got ",
                                     request->value_json()));
  }
  absl::StatusOr<ParameterChange> change =
      job_->SetParameter(caller.actor(), request->parameter(), value, request->reason());
  if (!change.ok()) return ToGrpcStatus(change.status());
  reply->set_parameter(change->parameter);
  reply->set_old_value_json(change->old_value.dump());
  reply->set_new_value_json(change->new_value.dump());
  reply->set_applies_at_round(change->applies_at_round);
  reply->set_audit_seq(change->audit_seq);
  return grpc::Status::OK;
}

grpc::Status AdminService::ListParticipants(grpc::ServerContext* context, const v1::ListParticipantsRequest* request,
                                            v1::ListParticipantsReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kListParticipants, *job_, &caller); !s.ok()) {
    return s;
  }
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  const nlohmann::json participants = job_->Participants();
  for (const auto& p : participants["participants"]) {
    v1::Participant* out = reply->add_participants();
    out->set_site(p["site"].get<std::string>());
    out->set_state(p["state"].get<std::string>());
    out->set_num_samples(p["num_samples"].get<uint64_t>());
    out->set_last_seen_ms_ago(p["last_seen_ms_ago"].get<int64_t>());
  }
  reply->set_open_enrollment(participants["open_enrollment"].get<bool>());
  return grpc::Status::OK;
}

grpc::Status AdminService::AddParticipant(grpc::ServerContext* context, const v1::ParticipantRequest* request,
                                          v1::ParticipantReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kAddParticipant, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  absl::StatusOr<uint64_t> seq = job_->AddParticipant(caller.actor(), request->site(), request->reason());
  if (!seq.ok()) return ToGrpcStatus(seq.status());
  reply->set_message(absl::StrCat("site ", request->site(), " enrolled in job ", job_->job_id()));
  reply->set_audit_seq(*seq);
  return grpc::Status::OK;
}

grpc::Status AdminService::RevokeParticipant(grpc::ServerContext* context, const v1::ParticipantRequest* request,
                                             v1::ParticipantReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kRevokeParticipant, *job_, &caller); !s.ok()) {
    return s;
  }
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  absl::StatusOr<uint64_t> seq = job_->RevokeParticipant(caller.actor(), request->site(), request->reason());
  if (!seq.ok()) return ToGrpcStatus(seq.status());
  reply->set_message(absl::StrCat("site ", request->site(), " revoked from job ", job_->job_id(),
                                  "; to refuse its certificate at the handshake too, revoke it at the CA "
                                  "(cohort provision revoke) and install the new CRL on the server"));
  reply->set_audit_seq(*seq);
  return grpc::Status::OK;
}

grpc::Status AdminService::ReadAuditLog(grpc::ServerContext* context, const v1::AuditLogRequest*,
                                        grpc::ServerWriter<v1::AuditLogChunk>* writer) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, kReadAuditLog, *job_, &caller); !s.ok()) return s;
  const audit::Writer* log = job_->audit_log();
  if (log == nullptr) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this server keeps no audit log");
  std::ifstream in(log->path(), std::ios::binary);
  if (!in) {
    return grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("cannot read the audit log ", log->path().string()));
  }
  // Whole lines only: an append in progress at the end is left for the next read.
  std::string pending;
  std::vector<char> buffer(1 << 20);
  v1::AuditLogChunk chunk;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    pending.append(buffer.data(), static_cast<size_t>(in.gcount()));
    const size_t last_newline = pending.rfind('\n');
    if (last_newline == std::string::npos) continue;
    chunk.set_data(pending.substr(0, last_newline + 1));
    pending.erase(0, last_newline + 1);
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "reader went away");
  }
  return grpc::Status::OK;
}

}  // namespace cohort::server
