#include "server/server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/access_policy.h"
#include "wire/stream_settings.h"
#include "server/grpc_services.h"
#include "server/vertical_service.h"

namespace cohort::server {
namespace {

// What both kinds of job do before they serve: refuse a permission table with a gap (a
// method without a permission would be refused to everyone, so the gap shows at the first
// start), then listen on options.listen_address with `services` and the chunk-stream
// settings. `port` is the port bound.
absl::StatusOr<std::unique_ptr<grpc::Server>> Listen(const ServerOptions& options, const std::string& job_id,
                                                     std::initializer_list<grpc::Service*> services, int& port) {
  if (const std::vector<std::string> gaps = PermissionTableProblems(); !gaps.empty()) {
    return absl::InternalError(absl::StrCat("the permission table does not cover the protocol: ",
                                            absl::StrJoin(gaps, "; ")));
  }
  const bool tls = options.credentials != nullptr;
  if (!tls) {
    spdlog::warn("job={} INSECURE: plaintext gRPC, no certificates; callers are who they say they are. "
                 "Use only for local experiments.", job_id);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, tls ? options.credentials : grpc::InsecureServerCredentials(),
                           &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  wire::ApplyChunkStreamSettings(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address, " (address in use or not local?)"));
  }
  return server;
}

}  // namespace

absl::Status ServeJob(FederatedJob& job, const ServerOptions& options) {
  const bool tls = options.credentials != nullptr;
  // Callback services: gRPC runs their reactions on its own few threads, and no call holds
  // one while it waits. They are declared before the server, so they outlive every call.
  FederationService federation(&job, /*require_certificate=*/tls, options.downloads_in_flight);
  AdminService admin(&job, /*require_certificate=*/tls);
  // Served without a job, so that a vertical party sent here hears why it is refused.
  VerticalService vertical(
      nullptr, /*require_certificate=*/tls,
      [&job](const Actor& actor, const std::string& method, const absl::Status& why) {
        job.RecordDenied(actor, method, why);
      },
      job.job_id(), &job.call_rate());
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = Listen(options, job.job_id(), {&federation, &admin, &vertical}, port);
  if (!server.ok()) return server.status();
  spdlog::info("job={} serving on port {} over {} ({} rounds, {} clients per round, minimum {})", job.job_id(), port,
               tls ? "mutual TLS" : "plaintext", job.config().federation.rounds, job.config().federation.clients_per_round,
               job.config().federation.min_clients);
  if (options.on_listening) options.on_listening(port);

  const absl::Status result = job.Run();
  if (result.ok()) {
    spdlog::info("job={} finished", job.job_id());
  } else {
    spdlog::error("job={} failed: {}", job.job_id(), std::string(result.message()));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(options.linger_seconds * 1000)));
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return result;
}

absl::Status ServeVerticalJob(VerticalJob& job, const ServerOptions& options) {
  const bool tls = options.credentials != nullptr;
  CallRateLimiter call_rate;  // per client certificate (core::kClientCallsPerSecond)
  VerticalService vertical(
      &job, /*require_certificate=*/tls,
      [&job](const Actor& actor, const std::string& method, const absl::Status& why) {
        job.RecordDenied(actor, method, why);
      },
      job.job_id(), &call_rate);
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = Listen(options, job.job_id(), {&vertical}, port);
  if (!server.ok()) {
    job.Cancel("the server could not listen");
    return server.status();
  }
  spdlog::info("job={} (vertical) serving on port {} over {}: {} parties, label party {}, {} epochs", job.job_id(),
               port, tls ? "mutual TLS" : "plaintext", job.config().vertical.parties.size(),
               job.config().vertical.label_party, job.config().vertical.epochs);
  if (options.on_listening) options.on_listening(port);
  const absl::Status result = job.Run();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(options.linger_seconds * 1000)));
  // Streams still open are cancelled; the service outlives every call.
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return result;
}

}  // namespace cohort::server
