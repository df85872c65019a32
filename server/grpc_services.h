#pragma once
// gRPC front of a FederatedJob: translates calls into FederatedJob methods and
// absl::Status into grpc::Status. Holds nothing but a pointer to the job.

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string_view>

#include "crypto/certificates.h"
#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"

namespace cohort::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

// Who is calling, from the verified certificate. In --insecure mode there is no
// certificate: the identity is whatever name the call carries and the role is
// "unauthenticated", which the permission table does not consult (anything goes, as the
// server's startup warning says).
struct Caller {
  std::string identity;
  std::optional<crypto::Role> role;  // empty in --insecure mode
  Actor actor() const;
};

// The first step of every handler: identifies the caller and checks the permission table
// (server/access_policy.h) for `method`. A refusal is PERMISSION_DENIED naming the
// identity, its role and the permission it lacks, logged, and recorded in the job's audit
// log.
grpc::Status Authorize(const grpc::ServerContext& context, bool require_certificate, std::string_view method,
                       FederatedJob& job, Caller* caller);

// For site calls that name the site they act for: the name must be the certificate's (a
// site cannot act under another site's name) and the site must take part in the job (not
// revoked, enrolled when the job lists its sites). On success `*site` is the name to act for.
grpc::Status ActAsSite(Caller& caller, const std::string& claimed, std::string_view method, FederatedJob& job,
                       std::string* site);

class FederationService final : public v1::Federation::Service {
 public:
  // `job` must outlive the service. `require_certificate`: callers are identified by
  // their mTLS certificates (false only in --insecure mode).
  FederationService(FederatedJob* job, bool require_certificate)
      : job_(job), require_certificate_(require_certificate) {}

  grpc::Status Join(grpc::ServerContext* context, const v1::JoinRequest* request, v1::JoinReply* reply) override;
  grpc::Status PullTask(grpc::ServerContext* context, const v1::TaskRequest* request,
                        grpc::ServerWriter<v1::TaskMessage>* writer) override;
  grpc::Status PushUpdate(grpc::ServerContext* context, grpc::ServerReader<v1::UpdateMessage>* reader,
                          v1::UpdateReceipt* receipt) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatReply* reply) override;
  grpc::Status Decline(grpc::ServerContext* context, const v1::DeclineRequest* request,
                       v1::DeclineReply* reply) override;

 private:
  FederatedJob* job_;
  bool require_certificate_;
};

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(FederatedJob* job, bool require_certificate)
      : job_(job), require_certificate_(require_certificate) {}
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::StatusRequest* request,
                         v1::StatusReply* reply) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsReply* reply) override;
  grpc::Status StartJob(grpc::ServerContext* context, const v1::JobControlRequest* request,
                        v1::JobControlReply* reply) override;
  grpc::Status StopJob(grpc::ServerContext* context, const v1::JobControlRequest* request,
                       v1::JobControlReply* reply) override;
  grpc::Status SetParameter(grpc::ServerContext* context, const v1::SetParameterRequest* request,
                            v1::SetParameterReply* reply) override;
  grpc::Status ListParticipants(grpc::ServerContext* context, const v1::ListParticipantsRequest* request,
                                v1::ListParticipantsReply* reply) override;
  grpc::Status AddParticipant(grpc::ServerContext* context, const v1::ParticipantRequest* request,
                              v1::ParticipantReply* reply) override;
  grpc::Status RevokeParticipant(grpc::ServerContext* context, const v1::ParticipantRequest* request,
                                 v1::ParticipantReply* reply) override;
  grpc::Status ReadAuditLog(grpc::ServerContext* context, const v1::AuditLogRequest* request,
                            grpc::ServerWriter<v1::AuditLogChunk>* writer) override;

 private:
  FederatedJob* job_;
  bool require_certificate_;
};

}  // namespace cohort::server
