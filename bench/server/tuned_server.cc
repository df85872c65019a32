#include "bench/server/tuned_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/grpc_services.h"

namespace cohort::bench {
namespace {

// The number after `prefix` in `tuning` ("quota=200" -> 200); false when it is not there.
bool NumberAfter(const std::string& tuning, const std::string& prefix, int64_t* value) {
  return tuning.rfind(prefix, 0) == 0 && absl::SimpleAtoi(tuning.substr(prefix.size()), value) && *value > 0;
}

}  // namespace

bool IsGrpcTuning(const std::string& tuning) {
  int64_t n = 0;
  return tuning.empty() || tuning == "bdp" || tuning == "no-bdp" || NumberAfter(tuning, "quota=", &n) ||
         (NumberAfter(tuning, "window=", &n) && n <= 1024);
}

absl::Status ServeJobTuned(server::FederatedJob& job, const server::ServerOptions& options, const std::string& tuning) {
  if (tuning.empty()) return server::ServeJob(job, options);
  if (!IsGrpcTuning(tuning)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gRPC tuning: expected bdp, no-bdp, window=MiB or quota=MB, got \"", tuning, "\""));
  }
  const bool tls = options.credentials != nullptr;
  server::FederationService federation(&job, /*require_certificate=*/tls, options.downloads_in_flight);
  server::AdminService admin(&job, /*require_certificate=*/tls);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, tls ? options.credentials : grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&federation);
  builder.RegisterService(&admin);
  builder.SetMaxReceiveMessageSize(8 << 20);
  grpc::ResourceQuota quota("cohort-bench");
  int64_t n = 0;
  if (tuning == "bdp") {
    // Nothing to add: gRPC's defaults.
  } else if (tuning == "no-bdp") {
    builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  } else if (NumberAfter(tuning, "window=", &n)) {
    builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, static_cast<int>(n << 20));
  } else if (NumberAfter(tuning, "quota=", &n)) {
    quota.Resize(static_cast<size_t>(n) * 1000 * 1000);
    builder.SetResourceQuota(quota);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  if (options.on_listening) options.on_listening(port);
  const absl::Status result = job.Run();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(options.linger_seconds * 1000)));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return result;
}

}  // namespace cohort::bench
