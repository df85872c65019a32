#pragma once
// The update path as it ran before sealing, kept for the benchmarks only: a gRPC server
// whose PushUpdate takes plaintext chunks and feeds them to core::UpdateReceiver (order and
// size checks, NaN/Inf scan, L2 norm, spool write) with no codec, behind the same server
// settings as server::ServeJob (8 MiB messages, BDP probing off, a fixed 4 MiB window).
// The shipped server refuses unsealed updates; this one prices the transport alone, so
// the upload can be compared with the older plaintext runs and with raw TCP (issue 2)
// apart from what sealing costs.

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::bench {

class UnsealedUploadServer {
 public:
  // Listens on 127.0.0.1:0 (plaintext); spools into `spool_dir`, one file per client that
  // its next update writes over, as the shipped server reuses folded spool files.
  // `manifest` is the layout updates must have.
  static absl::StatusOr<std::unique_ptr<UnsealedUploadServer>> Start(core::Manifest manifest,
                                                                    std::filesystem::path spool_dir);
  ~UnsealedUploadServer();
  int port() const { return port_; }

 private:
  class Service;
  UnsealedUploadServer() = default;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace cohort::bench
