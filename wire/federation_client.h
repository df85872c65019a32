#pragma once
// The client side of the Federation protocol (proto/cohort.proto), written once: the site
// agent (client/agent.cc), the benchmarks and the tests' harness all speak through it.
//
//   Join        a fresh X25519 key pair per Join; the session keys (SealedSession) are
//               agreed from the reply, so every chunk either way is sealed for it alone.
//   PullTask    one long poll: WAIT, DONE with a typed reason, or TRAIN with the global
//               model, each chunk opened straight into the caller's model buffer.
//   PushUpdate  a header (samples, metrics, privacy spend), then the delta's chunks, each
//               sealed straight into the message that carries it.
//   Heartbeat, Decline.
//
// Every call is one RPC with no retry: what to do when the server is away or has
// forgotten the client is the caller's decision (client/agent_state_machine.h). Errors
// keep the gRPC code (absl and gRPC share the numbering) and name the call.
//
// The narrow hooks marked "tests" (a chosen key pair or public key at Join, an observer of
// the sealed chunks as downloaded, an update's chunks sealed apart from their sending)
// let the tests send malformed things through this same code.

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "core/update_compression.h"
#include "crypto/key_agreement.h"
#include "proto/cohort.grpc.pb.h"
#include "wire/sealing.h"

namespace cohort::wire {

// What a Join agreed: the names every later call carries and the session's keys.
struct Session {
  std::string job_id{};
  std::string client_id{};
  std::string model_config_json{};  // the job's model spec, as the server sent it
  std::chrono::milliseconds heartbeat_every{1000};
  std::string server_public_key{};  // the server's X25519 key for this job run (32 bytes)
  // Keys agreed at this Join; null in a copy that only names the session (heartbeats).
  std::shared_ptr<SealedSession> sealing{};
};

struct JoinOptions {
  std::string job_id{};  // empty: whatever job the server runs
  std::chrono::milliseconds timeout{10000};
  // Wait up to `timeout` for a connection instead of failing at once (UNAVAILABLE) when
  // there is none.
  bool wait_for_ready = false;
  // Tests: join with this key pair instead of a fresh one (to derive keys by hand later).
  const crypto::X25519KeyPair* own_key = nullptr;
  // Tests: send these bytes as the public key instead of the pair's (a key the server
  // must refuse).
  const std::string* public_key_as_sent = nullptr;
  // Where the site's privacy ledger stands (the server checks it against its anchor);
  // unset: reported as no ledger.
  std::optional<v1::LedgerPosition> ledger{};
};

struct PullOptions {
  // How long the server may hold the call waiting for a task (it caps this at 30 s).
  std::chrono::milliseconds wait{10000};
  // Tests: sees every chunk of a TRAIN download as it came over the wire, still sealed.
  std::function<void(const v1::Chunk&)> on_chunk{};
};

struct PulledTask {
  v1::TaskHeader header{};  // TRAIN, WAIT or DONE (done_reason says why), as sent
  // TRAIN: OK when every chunk arrived, opened and filled the model; otherwise why not
  // (DataLoss: a chunk did not open with the session's keys).
  absl::Status download{};
  uint64_t model_bytes = 0;     // TRAIN: bytes of the model received, as sealed
  double download_seconds = 0;  // TRAIN: from the header to the end of the stream
};

// The header fields of an update; the manifest and chunk count come from the delta.
struct UpdateInfo {
  uint64_t round = 0;
  uint64_t base_model_version = 0;  // the version of the global model trained on
  uint64_t num_samples = 0;         // the FedAvg weight
  size_t chunk_bytes = 0;           // plaintext bytes per chunk: the task's chunk_bytes
  core::TrainMetrics metrics{};
  std::optional<v1::PrivacySpend> privacy_spend{};  // under DP-SGD
  std::optional<v1::LedgerPosition> ledger{};        // under DP-SGD: the ledger with this spend
};

// The UpdateInfo of an update answering TRAIN `task`: its round, the model version it
// carried and its chunk size; metrics and privacy spend are the caller's to fill.
UpdateInfo UpdateInfoFor(const v1::TaskHeader& task, uint64_t num_samples);

// Where a client connects. `credentials`: mutual TLS (ChannelCredentialsFromKit, or
// SiteConnectionFromKit below); null: plaintext.
struct Connection {
  std::string address{};  // host:port
  std::shared_ptr<grpc::ChannelCredentials> credentials{};
  // A TCP connection of this client's own even when another channel in the process has
  // the same arguments (benchmarks simulating many sites in one process).
  bool own_connection = false;
};

// A site's connection from its startup kit: mutual TLS with the kit's certificate, the
// server address the kit names, and the site's name (the certificate's). Fails naming
// the kit when it does not load or is not a site's.
struct SiteConnection {
  std::string site{};
  Connection connection{};
};
absl::StatusOr<SiteConnection> SiteConnectionFromKit(const std::string& kit_dir);

class FederationClient {
 public:
  // Opens the channel (lazily: no RPC is made) with the chunk-stream settings the server
  // uses (wire/stream_settings.h). Thread-safe: heartbeats may run beside a pull or push.
  explicit FederationClient(const Connection& connection);

  FederationClient(const FederationClient&) = delete;
  FederationClient& operator=(const FederationClient&) = delete;

  const std::string& address() const { return address_; }

  // Waits until the channel is connected (no RPC made); Unavailable after `timeout`.
  absl::Status WaitForConnection(std::chrono::milliseconds timeout);

  absl::StatusOr<Session> Join(const std::string& site, uint64_t num_samples, const JoinOptions& options = {});

  // One long poll for `session`'s task. For TRAIN the chunks are opened with
  // session.sealing straight into `*model`, whose buffer is reused when the manifest is
  // unchanged (pass last round's model); `*model` holds the new global model when
  // download is OK and is empty otherwise. `model` null: chunks are checked for order
  // and size and dropped unopened (benchmarks that measure only the server).
  // Fails (the StatusOr) when no header came (UNAVAILABLE also when the stream ended
  // without one), or a TRAIN header's manifest does not parse (InvalidArgument).
  absl::StatusOr<PulledTask> PullTask(const Session& session, core::ParameterSet* model,
                                      const PullOptions& options = {});
  // Polls until a TRAIN task comes and its model is downloaded; DONE is FailedPrecondition.
  absl::StatusOr<PulledTask> PullTrainTask(const Session& session, core::ParameterSet* model);

  // Streams `delta` as an update: the header, then chunks of info.chunk_bytes, each sealed
  // with session.sealing straight into its message. OK only when the server accepted it.
  // `bytes_sent`, when set, receives the bytes of the messages written (header and chunks,
  // as serialized): what this update cost on the wire before gRPC's framing.
  absl::Status PushUpdate(const Session& session, const UpdateInfo& info, const core::ParameterSet& delta,
                          uint64_t* bytes_sent = nullptr);
  // The same for an update the site compressed (core::CompressUpdate, federation.compression):
  // the header declares its encoding and each encoded chunk is sealed into its message.
  absl::Status PushEncodedUpdate(const Session& session, const UpdateInfo& info, const core::EncodedUpdate& update,
                                 uint64_t* bytes_sent = nullptr);

  absl::Status Heartbeat(const Session& session, std::chrono::milliseconds timeout);
  // This site will not train `round` and stays out of later rounds, saying why.
  absl::Status Decline(const Session& session, uint64_t round, const std::string& reason);

  // Benchmarks: the update stream with plaintext chunks and no Join, for the bench-only
  // receiver of bench/server/unsealed_upload_server.h (the server refuses these).
  absl::Status PushUnsealedUpdate(const std::string& client_id, const UpdateInfo& info,
                                  const core::ParameterSet& delta);

  // Tests: the pieces of PushUpdate apart, so a test can alter what passes between them.
  // The header PushUpdate sends for `delta`.
  static v1::UpdateHeader UpdateHeaderFor(const Session& session, const UpdateInfo& info,
                                          const core::ParameterSet& delta);
  // `delta`'s chunks of info.chunk_bytes, in plaintext.
  static std::vector<v1::Chunk> PlainUpdateChunks(const UpdateInfo& info, const core::ParameterSet& delta);
  // Seals each chunk's data in place, as PushUpdate seals an update for `round` trained
  // on `base_model_version`, at the index and count the chunk carries.
  static absl::Status SealChunks(SealedSession& sealing, uint64_t round, uint64_t base_model_version,
                                 std::vector<v1::Chunk>& chunks);
  // Sends `header` then `chunks` as they are. Fails with the server's code.
  absl::Status SendUpdate(const v1::UpdateHeader& header, std::span<const v1::Chunk> chunks);

 private:
  // `sealing` null: plaintext chunks. `chunk(i)`: the payload of chunk i (of the header's count).
  absl::Status StreamUpdate(v1::UpdateHeader header, const std::function<std::span<const std::byte>(uint32_t)>& chunk,
                            SealedSession* sealing, uint64_t* bytes_sent);

  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Federation::Stub> stub_;
};

}  // namespace cohort::wire
