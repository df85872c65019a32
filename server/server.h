#pragma once
// The aggregation server process: serves one FederatedJob over gRPC until it ends.

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "server/federated_job.h"
#include "server/vertical_job.h"

namespace cohort::server {

struct ServerOptions {
  std::string listen_address = "0.0.0.0:7878";
  // Mutual TLS (wire::ServerCredentialsFromKit). Null means plaintext with no caller
  // identities: only for --insecure.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Seconds to keep answering after the job ends, so every client learns it is done.
  double linger_seconds = 3;
  // The most model chunks that all downloads in progress hand to gRPC at once
  // (server/download_pacer.h): each costs about 2.5 chunk sizes of memory until the socket
  // takes it, so the server's memory does not grow with the number of sites downloading.
  // 0: no bound.
  size_t downloads_in_flight = 4;
  // Called once the port is bound, with the port actually bound (for ":0").
  std::function<void(int port)> on_listening;
};

// Runs `job` to completion behind a gRPC server. Returns the job's result.
absl::Status ServeJob(FederatedJob& job, const ServerOptions& options);
// The same for a vertical job (server/vertical_job.h): serves the Vertical service.
absl::Status ServeVerticalJob(VerticalJob& job, const ServerOptions& options);

}  // namespace cohort::server
