#include "server/server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "server/grpc_services.h"

namespace cohort::server {

absl::Status ServeJob(FederatedJob& job, const ServerOptions& options) {
  const bool tls = options.credentials != nullptr;
  FederationService federation(&job, /*require_certificate=*/tls);
  AdminService admin(&job, /*require_certificate=*/tls);
  grpc::ServerBuilder builder;
  int port = 0;
  if (!tls) {
    spdlog::warn("job={} INSECURE: plaintext gRPC, no certificates; callers are who they say they are. "
                 "Use only for local experiments.", job.job_id());
  }
  builder.AddListeningPort(options.listen_address, tls ? options.credentials : grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&federation);
  builder.RegisterService(&admin);
  // Chunks are at most 3 MiB; leave room for framing and headers.
  builder.SetMaxReceiveMessageSize(8 << 20);
  // A fixed 4 MiB HTTP/2 window per stream. With BDP probing gRPC grows each stream's
  // window and buffers that much per concurrent upload: measured on loopback, 32
  // simultaneous 100 MB uploads then cost ~8 model sizes of server memory instead of
  // ~0.5, and single uploads ran 2x slower (docs/benchmarks.md). 4 MiB still allows
  // ~80 MB/s per stream at 50 ms RTT.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address, " (address in use or not local?)"));
  }
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
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return result;
}

}  // namespace cohort::server
