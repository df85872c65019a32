#pragma once
// A benchmark client that speaks the wire protocol the way client/agent.cc does (Join,
// PullTask, PushUpdate with the same messages, the same chunking and the same channel
// arguments) without training: the update it pushes is given. client/ links LibTorch
// through the training layer, so the benchmarks carry this copy of the transport half.

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"
#include "proto/cohort.grpc.pb.h"
#include "proto/sealing.h"

namespace cohort::bench {

struct WireSession {
  std::string job_id;
  std::string client_id;
  std::shared_ptr<wire::SealedSession> sealing;  // keys agreed at Join, as the agent does
};

struct PulledTask {
  v1::TaskHeader header;
  uint64_t model_bytes = 0;     // bytes of the global model received
  double download_seconds = 0;  // from the header to the end of the stream
};

class WireClient {
 public:
  // One channel (and one TCP connection of its own) to `address` (host:port), over mutual
  // TLS with `credentials` (wire::ChannelCredentialsFromKit), or plaintext when null.
  explicit WireClient(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

  // Waits until the channel's connection is up (no RPC made).
  absl::Status Connect(std::chrono::seconds timeout);
  absl::StatusOr<WireSession> Join(const std::string& site, uint64_t num_samples);
  // Polls until the server hands out a TRAIN task; reads the global model's chunks and,
  // when `keep` is not null, opens and assembles them into it (otherwise only checks
  // their order and sizes and drops them unopened).
  absl::StatusOr<PulledTask> PullTrainTask(const WireSession& session, core::ParameterSet* keep);
  // Streams `update` as the agent does: a header, then sealed chunks of `chunk_bytes`,
  // then waits for the receipt. Fails unless the server accepted the update.
  absl::Status PushUpdate(const WireSession& session, const v1::TaskHeader& task, const core::ParameterSet& update,
                          uint64_t num_samples, size_t chunk_bytes);
  // The same stream in plaintext chunks, without a Join: only bench/server/
  // unsealed_upload_server.h takes it (the shipped server refuses unsealed updates).
  absl::Status PushUnsealedUpdate(const std::string& client_id, const core::ParameterSet& update, size_t chunk_bytes);

 private:
  // `sealing` null: plaintext chunks.
  absl::Status Stream(const std::string& job_id, const std::string& client_id, uint64_t round, uint64_t model_version,
                      const core::ParameterSet& update, uint64_t num_samples, size_t chunk_bytes,
                      wire::SealedSession* sealing);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Federation::Stub> stub_;
};

}  // namespace cohort::bench
