#pragma once
// server::ServeJob with one gRPC server setting changed, for the benchmarks' what-if runs:
// the same two services, the same credentials (options.credentials: mutual TLS, or
// plaintext when null), the same 8 MiB receive limit, job.Run() on the calling thread, the
// same linger and shutdown. Shows what a setting would change without touching server/.
//
// Tunings:
//   ""          none: call server::ServeJob itself (a fixed 4 MiB HTTP/2 window per stream)
//   "bdp"       gRPC's own defaults: BDP probing on, so each stream's window grows with the
//               measured bandwidth-delay product (ServeJob before it fixed the window)
//   "no-bdp"    GRPC_ARG_HTTP2_BDP_PROBE = 0 alone: windows stay at gRPC's initial 64 KiB
//   "window=N"  BDP probing off and a fixed HTTP/2 stream window of N MiB
//               (GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES), the fixed-window setup gRPC's
//               Java and Go servers default to, sized for a WAN round trip
//   "quota=MB"  a grpc::ResourceQuota of MB megabytes (10^6 bytes) on the server

#include <string>

#include "absl/status/status.h"
#include "server/federated_job.h"
#include "server/server.h"

namespace cohort::bench {

bool IsGrpcTuning(const std::string& tuning);

absl::Status ServeJobTuned(server::FederatedJob& job, const server::ServerOptions& options, const std::string& tuning);

}  // namespace cohort::bench
