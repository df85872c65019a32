#pragma once

// The gRPC settings both ends of a Cohort connection use for chunked model streams.
// Server and client apply the same values so that a model goes through the same
// transport in both directions; the measurements behind each value are in
// docs/benchmarks.md ("Wire upload", "Server peak memory").

#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

#include "core/limits.h"

namespace cohort::wire {

// Chunks are at most 3 MiB; leave room for framing and headers (core/limits.h).
inline constexpr int kMaxMessageBytes = core::kMaxMessageBytes;

// A fixed HTTP/2 window per stream. With BDP probing gRPC grows each stream's window
// and buffers that much per concurrent upload: measured on loopback, 32 simultaneous
// 100 MB uploads then cost ~8 model sizes of server memory instead of ~0.5, and single
// uploads ran 2x slower. 4 MiB still allows ~80 MB/s per stream at 50 ms RTT.
inline constexpr int kStreamWindowBytes = 4 << 20;

inline void ApplyChunkStreamSettings(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
}

inline void ApplyChunkStreamSettings(grpc::ChannelArguments& arguments) {
  arguments.SetMaxReceiveMessageSize(kMaxMessageBytes);
  arguments.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  arguments.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
}

}  // namespace cohort::wire
