#pragma once
// What every handler of the gRPC services checks before it does any work: who is calling
// (from the verified certificate), whether the permission table lets them, whether the
// request names the job served here, and, for site calls, that the site acts under its
// own name. Shared by the services (grpc_services.h) and the streaming reactors.

#include <grpcpp/grpcpp.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "crypto/certificates.h"
#include "server/call_rate_limiter.h"
#include "server/federated_job.h"

namespace cohort::server {

// absl and gRPC share the canonical code numbering: the code passes through unchanged.
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

// The first step of every handler: identifies the caller, takes one call from its rate
// (the job's CallRateLimiter; RESOURCE_EXHAUSTED saying when to retry) and checks the
// permission table (server/access_policy.h) for `method` (its full name,
// "/cohort.v1.Federation/Join"). A permission refusal is PERMISSION_DENIED naming the
// identity, its role and the permission it lacks. Every refusal is logged and recorded in
// the job's audit log (FederatedJob::RecordDenied, which aggregates repeats).
grpc::Status Authorize(const grpc::ServerContextBase& context, bool require_certificate, std::string_view method,
                       FederatedJob& job, Caller* caller);

// Authorize for a service that serves no FederatedJob (Vertical): the same identity, rate
// (when `call_rate` is given) and permission checks, each refusal handed to
// `record_denial` (which should log it and put it on the audit log).
// In --insecure mode there is no identity to limit, and no limit.
using DenialRecorder = std::function<void(const Actor& actor, const std::string& method, const absl::Status& why)>;
grpc::Status AuthorizeCaller(const grpc::ServerContextBase& context, bool require_certificate, std::string_view method,
                             const DenialRecorder& record_denial, Caller* caller, CallRateLimiter* call_rate = nullptr);

// Requests name a job; empty means the server's own. NOT_FOUND for another job's name.
grpc::Status CheckServedJob(const FederatedJob& job, const std::string& job_id);

// For site calls that name the site they act for: the name must be the certificate's (a
// site cannot act under another site's name) and the site must take part in the job (not
// revoked, enrolled when the job lists its sites). On success `*site` is the name to act for.
grpc::Status ActAsSite(Caller& caller, const std::string& claimed, std::string_view method, FederatedJob& job,
                       std::string* site);

// A streaming call answered with `status` before any message moves (a refused call).
// Deletes itself when gRPC is done with it. `Reactor` is a ServerReadReactor<T> or a
// ServerWriteReactor<T>.
template <typename Reactor>
class RefusedCall final : public Reactor {
 public:
  explicit RefusedCall(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace cohort::server
