#pragma once
// A throwaway federation for the benchmarks' mutual-TLS runs: a CA, the server's kit and
// one site kit per name, provisioned by crypto::ProvisionFederation into a directory that
// the caller owns, for a server on 127.0.0.1. Provisioning touches no gRPC; credentials
// are built only when asked for, so a process may provision and then fork its clients.

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::bench {

class BenchPki {
 public:
  static absl::StatusOr<BenchPki> Provision(const std::filesystem::path& dir, const std::vector<std::string>& sites);

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials() const;
  // The channel credentials of `site` (one of the names given to Provision).
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> SiteCredentials(const std::string& site) const;
  // The startup kit directory of `name` ("server" or a site): cert.pem, key.pem, ca.pem.
  std::filesystem::path kit_dir(const std::string& name) const { return dir_ / name; }

 private:
  std::filesystem::path dir_;
};

}  // namespace cohort::bench
