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

// A client's reconnection attempts while the server is away (not started yet, building a
// large initial model, restarting): gRPC's default backoff grows to 120 s (1 s x 1.6 per
// failure), so a site started beside a server that took 10 s to listen joined 20 s late.
// Capped at 2 s, a site joins within 2 s of the server listening. (The minimum backoff,
// which is also the shortest time a connection attempt is given, stays at its 20 s: a TLS
// handshake with a busy server may take more than a fraction of a second.)
inline constexpr int kInitialReconnectBackoffMs = 250;
inline constexpr int kMaxReconnectBackoffMs = 2000;

inline void ApplyChunkStreamSettings(grpc::ChannelArguments& arguments) {
  arguments.SetMaxReceiveMessageSize(kMaxMessageBytes);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kInitialReconnectBackoffMs);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  arguments.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  arguments.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
}

}  // namespace cohort::wire
