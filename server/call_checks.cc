#include "server/call_checks.h"

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "core/quote.h"
#include "server/access_policy.h"
#include "wire/credentials.h"

namespace cohort::server {
namespace {

grpc::Status Deny(FederatedJob& job, const Caller& caller, std::string_view method, const absl::Status& why) {
  job.RecordDenied(caller.actor(), std::string(method), why);
  return ToGrpcStatus(why);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

Actor Caller::actor() const {
  return {identity.empty() ? "anonymous" : identity,
          role ? std::string(crypto::RoleName(*role)) : std::string("unauthenticated")};
}

grpc::Status Authorize(const grpc::ServerContextBase& context, bool require_certificate, std::string_view method,
                       FederatedJob& job, Caller* caller) {
  return AuthorizeCaller(
      context, require_certificate, method,
      [&job](const Actor& actor, const std::string& m, const absl::Status& why) { job.RecordDenied(actor, m, why); },
      caller, &job.call_rate());
}

grpc::Status AuthorizeCaller(const grpc::ServerContextBase& context, bool require_certificate, std::string_view method,
                             const DenialRecorder& record_denial, Caller* caller, CallRateLimiter* call_rate) {
  if (!require_certificate) {
    caller->identity.clear();
    caller->role.reset();
    return grpc::Status::OK;
  }
  const auto deny = [&](const absl::Status& why) {
    record_denial(caller->actor(), std::string(method), why);
    return ToGrpcStatus(why);
  };
  absl::StatusOr<crypto::CertificateIdentity> identity = wire::PeerIdentity(context);
  if (!identity.ok()) {
    caller->identity = context.peer();
    return deny(absl::PermissionDeniedError(std::string(identity.status().message())));
  }
  caller->identity = identity->name;
  caller->role = identity->role;
  // The rate first: a flood of calls the table refuses costs no more than one it allows.
  if (call_rate != nullptr) {
    if (absl::Status admitted = call_rate->Admit(identity->name); !admitted.ok()) return deny(admitted);
  }
  if (absl::Status allowed = CheckAccess(identity->name, identity->role, method); !allowed.ok()) return deny(allowed);
  return grpc::Status::OK;
}

grpc::Status CheckServedJob(const FederatedJob& job, const std::string& job_id) {
  if (!job_id.empty() && job_id != job.job_id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("job ", core::QuotePrefix(job_id), " is not served here (this server runs \"",
                                     job.job_id(), "\")"));
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

}  // namespace cohort::server
