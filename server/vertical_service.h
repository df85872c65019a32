#pragma once
// gRPC front of a VerticalJob: the Vertical service's Exchange, one bidi stream per party
// for the whole job, as a callback reactor (no thread is held per stream).
//
// A stream is checked like every call (AuthorizeCaller: the certificate's identity and the
// permission table), then its first message must be the party's hello; after it the party
// sends relays and reports, and receives what the job queues for it, one write in flight
// at a time. Reading stops while the job holds the party for flow control
// (VerticalJob::Relay) and resumes when the job says so. A refused stream is answered with
// one VerticalControl ABORT carrying the reason, then the status.
//
// A server of a horizontal job serves this service too, without a job: every Exchange is
// answered FAILED_PRECONDITION, so a party pointed at the wrong server hears why.

#include <grpcpp/grpcpp.h>

#include <string>

#include "proto/cohort.grpc.pb.h"
#include "server/call_checks.h"
#include "server/vertical_job.h"

namespace cohort::server {

class VerticalService final : public v1::Vertical::CallbackService {
 public:
  // `job` (null on a horizontal job's server) must outlive the service. `served_job` names
  // the job for the refusal a horizontal server gives. `record_denial` puts refused calls on
  // the audit log. `require_certificate`: false only in --insecure mode, where a party is
  // who its hello says. `call_rate` (optional; must outlive the service) is the server's
  // per-client call rate: each Exchange stream costs one call when it opens.
  VerticalService(VerticalJob* job, bool require_certificate, DenialRecorder record_denial, std::string served_job,
                  CallRateLimiter* call_rate = nullptr);

  grpc::ServerBidiReactor<v1::VerticalMessage, v1::VerticalMessage>* Exchange(
      grpc::CallbackServerContext* context) override;

 private:
  VerticalJob* const job_;
  const bool require_certificate_;
  const DenialRecorder record_denial_;
  const std::string served_job_;
  CallRateLimiter* const call_rate_;
};

}  // namespace cohort::server
