#include "server/grpc_services.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/quote.h"
#include "server/task_stream.h"
#include "server/update_upload.h"
#include "wire/convert.h"

namespace cohort::server {
namespace {

// ReadAuditLog's stream: the log file in pieces of whole lines, the next piece read when
// the transport has taken the last, so a slow reader holds one piece and no thread. An
// append in progress at the end is left for the next read.
class AuditLogStream final : public grpc::ServerWriteReactor<v1::AuditLogChunk> {
 public:
  explicit AuditLogStream(const std::filesystem::path& path) : in_(path, std::ios::binary) {
    if (!in_) {
      Finish(grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("cannot read the audit log ", path.string())));
      return;
    }
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "reader went away"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    while (in_) {
      in_.read(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
      pending_.append(buffer_.data(), static_cast<size_t>(in_.gcount()));
      const size_t last_newline = pending_.rfind('\n');
      if (last_newline == std::string::npos) continue;
      chunk_.set_data(pending_.substr(0, last_newline + 1));
      pending_.erase(0, last_newline + 1);
      StartWrite(&chunk_);
      return;
    }
    Finish(grpc::Status::OK);
  }

  std::ifstream in_;
  std::vector<char> buffer_ = std::vector<char>(1 << 20);
  std::string pending_;
  v1::AuditLogChunk chunk_;
};

}  // namespace

grpc::Status FederationService::ServeJoin(grpc::CallbackServerContext* context, std::string_view method,
                                          const v1::JoinRequest* request, v1::JoinReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string site;
  if (grpc::Status s = ActAsSite(caller, request->site(), method, *job_, &site); !s.ok()) return s;
  absl::StatusOr<JoinResult> joined = job_->Join(site, request->num_samples(), request->client_public_key(),
                                                  LedgerPositionFromProto(request->ledger()));
  if (!joined.ok()) return ToGrpcStatus(joined.status());
  reply->set_job_id(job_->job_id());
  reply->set_client_id(joined->client_id);
  reply->set_server_public_key(joined->server_public_key);
  reply->set_model_config_json(job_->config().model_config.dump());
  reply->set_heartbeat_interval_ms(
      static_cast<uint32_t>(std::max(100.0, job_->config().federation.heartbeat_timeout_s * 1000 / 4)));
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::TaskMessage>* FederationService::PullTask(grpc::CallbackServerContext* context,
                                                                       const v1::TaskRequest* request) {
  using Refused = RefusedCall<grpc::ServerWriteReactor<v1::TaskMessage>>;
  const std::string method = Method(__func__);
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return new Refused(s);
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return new Refused(s);
  std::string client;
  if (grpc::Status s = ActAsSite(caller, request->client_id(), method, *job_, &client); !s.ok()) return new Refused(s);
  const auto wait = std::chrono::milliseconds(std::min<uint32_t>(request->wait_ms(), 30000));
  return TaskStream::Start(context, waiters_, pacer_, client, wait, static_cast<size_t>(job_->config().federation.chunk_bytes));
}

grpc::ServerReadReactor<v1::UpdateMessage>* FederationService::PushUpdate(grpc::CallbackServerContext* context,
                                                                          v1::UpdateReceipt* receipt) {
  const std::string method = Method(__func__);
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) {
    return new RefusedCall<grpc::ServerReadReactor<v1::UpdateMessage>>(s);
  }
  return new UpdateUpload(*job_, std::move(caller), method, receipt);
}

grpc::Status FederationService::ServeHeartbeat(grpc::CallbackServerContext* context, std::string_view method,
                                               const v1::HeartbeatRequest* request, v1::HeartbeatReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller, request->client_id(), method, *job_, &client); !s.ok()) return s;
  if (absl::Status s = job_->Heartbeat(client); !s.ok()) return ToGrpcStatus(s);
  const JobStatus status = job_->BriefStatus();
  reply->set_job_state(std::string(JobStateName(status.state)));
  reply->set_round(status.round);
  return grpc::Status::OK;
}

grpc::Status FederationService::ServeDecline(grpc::CallbackServerContext* context, std::string_view method,
                                             const v1::DeclineRequest* request, v1::DeclineReply*) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  std::string client;
  if (grpc::Status s = ActAsSite(caller, request->client_id(), method, *job_, &client); !s.ok()) return s;
  return ToGrpcStatus(job_->Decline(client, request->round(), request->reason()));
}

grpc::Status AdminService::ServeGetStatus(grpc::CallbackServerContext* context, std::string_view method,
                                          const v1::StatusRequest*, v1::StatusReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  JobStatus status = job_->Status();
  reply->set_job_id(status.job_id);
  reply->set_state(std::string(JobStateName(status.state)));
  reply->set_round(status.round);
  reply->set_total_rounds(static_cast<uint32_t>(status.total_rounds));
  for (const JobStatus::Client& c : status.clients) {
    v1::ClientStatus* client = reply->add_clients();
    client->set_client_id(c.client_id);
    client->set_state(c.state);
    client->set_num_samples(c.num_samples);
    client->set_last_seen_ms_ago(c.last_seen_ms_ago);
  }
  reply->set_summary_json(std::move(status.summary_json));
  reply->set_audit_head(status.audit_head);
  reply->set_audit_entries(status.audit_entries);
  return grpc::Status::OK;
}

grpc::Status AdminService::ServeListJobs(grpc::CallbackServerContext* context, std::string_view method,
                                         const v1::ListJobsRequest*, v1::ListJobsReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  const JobStatus status = job_->BriefStatus();
  v1::JobSummary* job = reply->add_jobs();
  job->set_job_id(status.job_id);
  job->set_state(std::string(JobStateName(status.state)));
  job->set_round(status.round);
  job->set_total_rounds(static_cast<uint32_t>(status.total_rounds));
  return grpc::Status::OK;
}

grpc::Status AdminService::ServeStartJob(grpc::CallbackServerContext* context, std::string_view method,
                                         const v1::JobControlRequest* request, v1::JobControlReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  if (absl::Status s = job_->Start(caller.actor()); !s.ok()) return ToGrpcStatus(s);
  reply->set_message(absl::StrCat("job ", job_->job_id(), " started"));
  return grpc::Status::OK;
}

grpc::Status AdminService::ServeStopJob(grpc::CallbackServerContext* context, std::string_view method,
                                        const v1::JobControlRequest* request, v1::JobControlReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  if (absl::Status s = job_->Stop(caller.actor(), request->reason()); !s.ok()) return ToGrpcStatus(s);
  reply->set_message(absl::StrCat("job ", job_->job_id(), " stops at the next round boundary"));
  return grpc::Status::OK;
}

grpc::Status AdminService::ServeSetParameter(grpc::CallbackServerContext* context, std::string_view method,
                                             const v1::SetParameterRequest* request, v1::SetParameterReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  // Bounded: the value is copied, compared and printed recursively from here on.
  absl::StatusOr<nlohmann::json> value =
      core::ParseBoundedJson(request->value_json(), core::kAdminValueJson,
                             absl::StrCat("value for ", core::QuotePrefix(request->parameter())));
  if (!value.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat(value.status().message(), " (expected JSON such as 0.05, 3 or \"cosine\")"));
  }
  absl::StatusOr<ParameterChange> change =
      job_->SetParameter(caller.actor(), request->parameter(), *value, request->reason());
  if (!change.ok()) return ToGrpcStatus(change.status());
  reply->set_parameter(change->parameter);
  reply->set_old_value_json(change->old_value.dump());
  reply->set_new_value_json(change->new_value.dump());
  reply->set_applies_at_round(change->applies_at_round);
  reply->set_audit_seq(change->audit_seq);
  return grpc::Status::OK;
}

grpc::Status AdminService::ServeListParticipants(grpc::CallbackServerContext* context, std::string_view method,
                                                 const v1::ListParticipantsRequest* request,
                                                 v1::ListParticipantsReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) {
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

grpc::Status AdminService::ServeAddParticipant(grpc::CallbackServerContext* context, std::string_view method,
                                               const v1::ParticipantRequest* request, v1::ParticipantReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) return s;
  if (grpc::Status s = CheckServedJob(*job_, request->job_id()); !s.ok()) return s;
  absl::StatusOr<uint64_t> seq = job_->AddParticipant(caller.actor(), request->site(), request->reason());
  if (!seq.ok()) return ToGrpcStatus(seq.status());
  reply->set_message(absl::StrCat("site ", request->site(), " enrolled in job ", job_->job_id()));
  reply->set_audit_seq(*seq);
  return grpc::Status::OK;
}

grpc::Status AdminService::ServeRevokeParticipant(grpc::CallbackServerContext* context, std::string_view method,
                                                  const v1::ParticipantRequest* request, v1::ParticipantReply* reply) {
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, method, *job_, &caller); !s.ok()) {
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

grpc::ServerWriteReactor<v1::AuditLogChunk>* AdminService::ReadAuditLog(grpc::CallbackServerContext* context,
                                                                        const v1::AuditLogRequest*) {
  using Refused = RefusedCall<grpc::ServerWriteReactor<v1::AuditLogChunk>>;
  Caller caller;
  if (grpc::Status s = Authorize(*context, require_certificate_, Method(__func__), *job_, &caller); !s.ok()) {
    return new Refused(s);
  }
  const audit::Writer* log = job_->audit_log();
  if (log == nullptr) {
    return new Refused(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this server keeps no audit log"));
  }
  return new AuditLogStream(log->path());
}

}  // namespace cohort::server
