#pragma once
// gRPC front of a FederatedJob: translates calls into FederatedJob methods and
// absl::Status into grpc::Status. Holds nothing but a pointer to the job.

#include <grpcpp/grpcpp.h>

#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"

namespace cohort::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

class FederationService final : public v1::Federation::Service {
 public:
  // `job` must outlive the service.
  explicit FederationService(FederatedJob* job) : job_(job) {}

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
};

class AdminService final : public v1::Admin::Service {
 public:
  explicit AdminService(FederatedJob* job) : job_(job) {}
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::StatusRequest* request,
                         v1::StatusReply* reply) override;

 private:
  FederatedJob* job_;
};

}  // namespace cohort::server
