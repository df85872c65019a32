#pragma once
// gRPC front of a FederatedJob: translates calls into FederatedJob methods and
// absl::Status into grpc::Status. Holds nothing but a pointer to the job.

#include <grpcpp/grpcpp.h>

#include "crypto/certificates.h"
#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"

namespace cohort::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

// Who is calling. Under mutual TLS the caller is the name in its verified certificate and
// must hold `role`; a `claimed` name that differs from the certificate is refused (a site
// cannot act under another site's name). Without TLS (`--insecure`) the claimed name is
// taken as is. On success `*caller` is the name to act for.
grpc::Status IdentifyCaller(const grpc::ServerContext& context, bool require_certificate,
                            std::initializer_list<crypto::Role> roles, const std::string& claimed,
                            std::string* caller);

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

 private:
  grpc::Status CheckJob(const std::string& job_id) const;
  FederatedJob* job_;
  bool require_certificate_;
};

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(FederatedJob* job, bool require_certificate)
      : job_(job), require_certificate_(require_certificate) {}
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::StatusRequest* request,
                         v1::StatusReply* reply) override;

 private:
  FederatedJob* job_;
  bool require_certificate_;
};

}  // namespace cohort::server
