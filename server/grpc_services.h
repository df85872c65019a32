#pragma once
// gRPC front of a FederatedJob, as callback services: translates calls into FederatedJob
// methods and absl::Status into grpc::Status. No call holds a thread while it waits: a
// long-polled PullTask is an entry in TaskWaiters until its task comes, a model download
// writes its next chunk when the transport has taken the last (TaskStream), and an upload
// takes each chunk as it arrives (UpdateUpload). Unary calls do their short work on the
// gRPC thread that delivers them and answer at once.
//
// Every handler first asks Authorize (server/call_checks.h) for its method, named by the
// handler itself: the generated services fix each handler's name to its method's in
// cohort.proto, so `__func__` is the method name and no method name is written here.

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

#include "proto/cohort.grpc.pb.h"
#include "server/access_policy.h"
#include "server/call_checks.h"
#include "server/download_pacer.h"
#include "server/federated_job.h"
#include "server/task_waiters.h"

namespace cohort::server {

// Finishes a unary call with `status`.
inline grpc::ServerUnaryReactor* AnswerNow(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

class FederationService final : public v1::Federation::CallbackService {
 public:
  // `job` must outlive the service, and the service the gRPC server it is registered with.
  // `require_certificate`: callers are identified by their mTLS certificates (false only in
  // --insecure mode). `downloads_in_flight`: the most model chunks all downloads hand to
  // gRPC at once (server/download_pacer.h; 0: no bound).
  FederationService(FederatedJob* job, bool require_certificate, size_t downloads_in_flight)
      : job_(job),
        require_certificate_(require_certificate),
        waiters_(*job),
        pacer_(downloads_in_flight, kDownloadStallAfter) {}

  // A download's turn held longer than this stops counting against the bound. A write
  // that takes this long waits on its site's link or flow control, not on the server's
  // cores: its memory is bounded by its stream's window whatever the pacer does, and
  // holding others back behind it would only slow a federation of sites on slow links.
  static constexpr std::chrono::milliseconds kDownloadStallAfter{100};

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context, const v1::JoinRequest* request,
                                 v1::JoinReply* reply) override {
    return AnswerNow(context, ServeJoin(context, Method(__func__), request, reply));
  }
  grpc::ServerWriteReactor<v1::TaskMessage>* PullTask(grpc::CallbackServerContext* context,
                                                       const v1::TaskRequest* request) override;
  grpc::ServerReadReactor<v1::UpdateMessage>* PushUpdate(grpc::CallbackServerContext* context,
                                                          v1::UpdateReceipt* receipt) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context, const v1::HeartbeatRequest* request,
                                      v1::HeartbeatReply* reply) override {
    return AnswerNow(context, ServeHeartbeat(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* Decline(grpc::CallbackServerContext* context, const v1::DeclineRequest* request,
                                    v1::DeclineReply* reply) override {
    return AnswerNow(context, ServeDecline(context, Method(__func__), request, reply));
  }

 private:
  static std::string Method(std::string_view name) {
    return FullMethodName(v1::Federation::service_full_name(), name);
  }
  grpc::Status ServeJoin(grpc::CallbackServerContext* context, std::string_view method, const v1::JoinRequest* request,
                         v1::JoinReply* reply);
  grpc::Status ServeHeartbeat(grpc::CallbackServerContext* context, std::string_view method,
                              const v1::HeartbeatRequest* request, v1::HeartbeatReply* reply);
  grpc::Status ServeDecline(grpc::CallbackServerContext* context, std::string_view method,
                            const v1::DeclineRequest* request, v1::DeclineReply* reply);

  FederatedJob* job_;
  bool require_certificate_;
  TaskWaiters waiters_;  // the PullTask calls waiting for work
  DownloadPacer pacer_;  // the turns of the model downloads in progress
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  AdminService(FederatedJob* job, bool require_certificate)
      : job_(job), require_certificate_(require_certificate) {}

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context, const v1::StatusRequest* request,
                                      v1::StatusReply* reply) override {
    return AnswerNow(context, ServeGetStatus(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
                                     v1::ListJobsReply* reply) override {
    return AnswerNow(context, ServeListJobs(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* StartJob(grpc::CallbackServerContext* context, const v1::JobControlRequest* request,
                                     v1::JobControlReply* reply) override {
    return AnswerNow(context, ServeStartJob(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* StopJob(grpc::CallbackServerContext* context, const v1::JobControlRequest* request,
                                    v1::JobControlReply* reply) override {
    return AnswerNow(context, ServeStopJob(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* SetParameter(grpc::CallbackServerContext* context, const v1::SetParameterRequest* request,
                                         v1::SetParameterReply* reply) override {
    return AnswerNow(context, ServeSetParameter(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* ListParticipants(grpc::CallbackServerContext* context,
                                             const v1::ListParticipantsRequest* request,
                                             v1::ListParticipantsReply* reply) override {
    return AnswerNow(context, ServeListParticipants(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* AddParticipant(grpc::CallbackServerContext* context, const v1::ParticipantRequest* request,
                                           v1::ParticipantReply* reply) override {
    return AnswerNow(context, ServeAddParticipant(context, Method(__func__), request, reply));
  }
  grpc::ServerUnaryReactor* RevokeParticipant(grpc::CallbackServerContext* context,
                                              const v1::ParticipantRequest* request,
                                              v1::ParticipantReply* reply) override {
    return AnswerNow(context, ServeRevokeParticipant(context, Method(__func__), request, reply));
  }
  grpc::ServerWriteReactor<v1::AuditLogChunk>* ReadAuditLog(grpc::CallbackServerContext* context,
                                                             const v1::AuditLogRequest* request) override;

 private:
  static std::string Method(std::string_view name) { return FullMethodName(v1::Admin::service_full_name(), name); }
  grpc::Status ServeGetStatus(grpc::CallbackServerContext* context, std::string_view method,
                              const v1::StatusRequest* request, v1::StatusReply* reply);
  grpc::Status ServeListJobs(grpc::CallbackServerContext* context, std::string_view method,
                             const v1::ListJobsRequest* request, v1::ListJobsReply* reply);
  grpc::Status ServeStartJob(grpc::CallbackServerContext* context, std::string_view method,
                             const v1::JobControlRequest* request, v1::JobControlReply* reply);
  grpc::Status ServeStopJob(grpc::CallbackServerContext* context, std::string_view method,
                            const v1::JobControlRequest* request, v1::JobControlReply* reply);
  grpc::Status ServeSetParameter(grpc::CallbackServerContext* context, std::string_view method,
                                 const v1::SetParameterRequest* request, v1::SetParameterReply* reply);
  grpc::Status ServeListParticipants(grpc::CallbackServerContext* context, std::string_view method,
                                     const v1::ListParticipantsRequest* request, v1::ListParticipantsReply* reply);
  grpc::Status ServeAddParticipant(grpc::CallbackServerContext* context, std::string_view method,
                                   const v1::ParticipantRequest* request, v1::ParticipantReply* reply);
  grpc::Status ServeRevokeParticipant(grpc::CallbackServerContext* context, std::string_view method,
                                      const v1::ParticipantRequest* request, v1::ParticipantReply* reply);

  FederatedJob* job_;
  bool require_certificate_;
};

}  // namespace cohort::server
