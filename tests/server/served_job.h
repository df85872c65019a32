#pragma once
// A FederatedJob behind a real gRPC server on 127.0.0.1 (plaintext transport, as
// --insecure runs it; the model streams are sealed all the same), and sites that speak
// to it through the one client of the protocol (wire/federation_client.h): a fresh
// X25519 key at every Join, the global model opened as it is pulled, the update sealed
// as it is pushed. Hooks let a test alter the update before it is sealed (bad values)
// or after (attacks on the seal).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "crypto/key_agreement.h"
#include "proto/cohort.grpc.pb.h"
#include "server/checkpoint_key.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "wire/federation_client.h"
#include "wire/sealing.h"

namespace cohort::server::testing {

// Two tensors, 4,352 floats (17,408 bytes): five chunks of 4,096 bytes, the last short.
inline core::Manifest SmallManifest() {
  return core::Manifest({{"layers.0.weight", core::DType::kFloat32, {64, 64}},
                         {"layers.0.bias", core::DType::kFloat32, {256}}});
}
inline const size_t kSmallFloats = SmallManifest().num_elements();
inline constexpr size_t kSmallChunkBytes = 4096;
inline constexpr uint32_t kSmallChunks = 5;

// Serves `job` with ServeJob on a free port of 127.0.0.1, over mutual TLS with
// `credentials` (plaintext when null), and returns the port once it listens; `serving`
// receives ServeJob's result. Fails the test (and returns 0) if ServeJob ends first.
// `downloads_in_flight`: ServerOptions' bound on the model chunks all downloads hold.
inline int ServeOnLoopback(FederatedJob& job, std::shared_ptr<grpc::ServerCredentials> credentials,
                           double linger_seconds, std::future<absl::Status>* serving,
                           size_t downloads_in_flight = ServerOptions().downloads_in_flight) {
  auto bound = std::make_shared<std::promise<int>>();
  std::future<int> port = bound->get_future();
  ServerOptions options;
  options.downloads_in_flight = downloads_in_flight;
  options.listen_address = "127.0.0.1:0";
  options.linger_seconds = linger_seconds;
  options.credentials = std::move(credentials);
  options.on_listening = [bound](int listening) { bound->set_value(listening); };
  *serving = std::async(std::launch::async, [&job, options] { return ServeJob(job, options); });
  while (port.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
    if (serving->wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      ADD_FAILURE() << "the server stopped before it listened: " << serving->get();
      return 0;
    }
  }
  return port.get();
}

inline core::JobConfig SmallJob(int64_t rounds, int64_t per_round, int64_t min_clients, double heartbeat_timeout_s) {
  core::JobConfig config;
  config.name = "test-job";
  config.federation.rounds = rounds;
  config.federation.clients_per_round = per_round;
  config.federation.min_clients = min_clients;
  config.federation.round_timeout_s = 30;
  config.federation.heartbeat_timeout_s = heartbeat_timeout_s;
  config.federation.max_round_retries = 2;
  config.federation.chunk_bytes = kSmallChunkBytes;
  return config;
}

struct Pulled {
  v1::TaskHeader header;
  std::vector<float> model;         // opened with the client's session
  std::vector<v1::Chunk> sealed;    // the chunks as they came over the wire, up to one that did not open
  absl::Status opened;              // why the model did not open, if it did not
};

using ChunkHook = std::function<void(v1::UpdateHeader&, std::vector<v1::Chunk>&)>;

struct PushOptions {
  ChunkHook before_sealing;  // alters the plaintext chunks (or the header)
  ChunkHook after_sealing;   // alters the chunks as sent (or the header)
  // Seals with this session instead of the client's own.
  std::shared_ptr<wire::SealedSession> seal_with;
};
inline PushOptions BeforeSealing(ChunkHook hook) { return {std::move(hook), nullptr, nullptr}; }
inline PushOptions AfterSealing(ChunkHook hook) { return {nullptr, std::move(hook), nullptr}; }
inline PushOptions SealedWith(std::shared_ptr<wire::SealedSession> session) {
  return {nullptr, nullptr, std::move(session)};
}

// What one site holds after its last Join.
struct SiteKeys {
  crypto::X25519KeyPair own;
  crypto::X25519PublicKey server_public{};
  std::shared_ptr<wire::SealedSession> session;
};

// The key a job served without one authenticates its checkpoints under (OUT/checkpoint.key).
inline core::CheckpointKey CheckpointKeyOf(const std::filesystem::path& out_dir) {
  absl::StatusOr<core::CheckpointKey> key = LoadOrCreateCheckpointKeyFile(out_dir / "checkpoint.key");
  EXPECT_TRUE(key.ok()) << key.status();
  return key.ok() ? *key : core::CheckpointKey{};
}

// absl and gRPC share the canonical code numbering.
inline grpc::Status ToGrpc(const absl::Status& s) {
  return s.ok() ? grpc::Status::OK : grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

class ServedJob {
 public:
  explicit ServedJob(core::JobConfig config, core::ParameterSet initial = core::ParameterSet(SmallManifest())) {
    char dir_template[] = "/tmp/cohort-server-test-XXXXXX";
    out_dir_ = ::mkdtemp(dir_template);
    JobOptions options;
    options.config = std::move(config);
    options.initial_model = std::move(initial);
    options.out_dir = out_dir_;
    job_ = std::move(*FederatedJob::Create(std::move(options)));
    const int port = ServeOnLoopback(*job_, nullptr, /*linger_seconds=*/0.2, &serving_);
    client_ = std::make_unique<wire::FederationClient>(wire::Connection{"127.0.0.1:" + std::to_string(port)});
  }
  ~ServedJob() {
    job_->Cancel();
    if (serving_.valid()) serving_.wait();
    std::filesystem::remove_all(out_dir_);
  }

  // Joins with a fresh key pair (sending `public_key` instead of its public half, when
  // given) and agrees the session keys from the reply.
  grpc::Status TryJoin(const std::string& site, uint64_t samples, const std::string* public_key = nullptr) {
    SiteKeys keys;
    keys.own = crypto::GenerateX25519KeyPair();
    wire::JoinOptions options;
    options.own_key = &keys.own;
    options.public_key_as_sent = public_key;
    absl::StatusOr<wire::Session> joined = client_->Join(site, samples, options);
    if (!joined.ok()) return ToGrpc(joined.status());
    EXPECT_EQ(joined->client_id, site);
    EXPECT_EQ(joined->server_public_key.size(), crypto::kX25519KeySize);
    std::memcpy(keys.server_public.data(), joined->server_public_key.data(),
                std::min(joined->server_public_key.size(), keys.server_public.size()));
    keys.session = joined->sealing;
    sites_[site] = std::move(keys);
    joined_[site] = std::move(*joined);
    return grpc::Status::OK;
  }
  void Join(const std::string& site, uint64_t samples) {
    const grpc::Status s = TryJoin(site, samples);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Pulls a task; for TRAIN, opens the model with `open_with` (default: the client's session).
  Pulled Pull(const std::string& client, uint32_t wait_ms = 5000,
              std::shared_ptr<wire::SealedSession> open_with = nullptr) {
    wire::Session as = joined_.at(client);
    if (open_with != nullptr) as.sealing = std::move(open_with);
    Pulled pulled;
    wire::PullOptions options;
    options.wait = std::chrono::milliseconds(wait_ms);
    options.on_chunk = [&pulled](const v1::Chunk& chunk) { pulled.sealed.push_back(chunk); };
    core::ParameterSet model;
    absl::StatusOr<wire::PulledTask> task = client_->PullTask(as, &model, options);
    EXPECT_TRUE(task.ok()) << task.status();
    if (!task.ok()) return pulled;
    pulled.header = task->header;
    pulled.opened = task->download;
    if (pulled.header.kind() == v1::TaskHeader::TRAIN && pulled.opened.ok()) {
      pulled.model.assign(model.floats().begin(), model.floats().end());
    }
    return pulled;
  }

  // Streams `values` as an update: header, then the chunks sealed for `round` and
  // `version` (the header's round and base version unless a hook changes them).
  grpc::Status Push(const std::string& client, uint64_t round, uint64_t version, const std::vector<float>& values,
                    uint64_t samples, const PushOptions& options = {}) {
    core::ParameterSet delta(SmallManifest());
    EXPECT_EQ(values.size(), delta.floats().size());
    std::copy_n(values.begin(), std::min(values.size(), delta.floats().size()), delta.floats().begin());
    wire::UpdateInfo info;
    info.round = round;
    info.base_model_version = version;
    info.num_samples = samples;
    info.chunk_bytes = kSmallChunkBytes;
    v1::UpdateHeader header = wire::FederationClient::UpdateHeaderFor(joined_.at(client), info, delta);
    std::vector<v1::Chunk> chunks = wire::FederationClient::PlainUpdateChunks(info, delta);
    if (options.before_sealing) options.before_sealing(header, chunks);
    const std::shared_ptr<wire::SealedSession> sealer = options.seal_with ? options.seal_with : session(client);
    EXPECT_TRUE(wire::FederationClient::SealChunks(*sealer, header.round(), header.base_model_version(), chunks).ok());
    if (options.after_sealing) options.after_sealing(header, chunks);
    last_sent_ = chunks;
    return ToGrpc(client_->SendUpdate(header, chunks));
  }
  // The chunks of the last Push as they were sent.
  const std::vector<v1::Chunk>& last_sent() const { return last_sent_; }

  void Heartbeat(const std::string& client) { (void)client_->Heartbeat(joined_.at(client), std::chrono::seconds(5)); }

  const std::shared_ptr<wire::SealedSession>& session(const std::string& site) { return sites_.at(site).session; }
  SiteKeys& keys(const std::string& site) { return sites_.at(site); }
  FederatedJob& job() { return *job_; }
  const std::string& address() const { return client_->address(); }  // host:port it serves on
  const std::filesystem::path& out_dir() const { return out_dir_; }
  absl::Status Wait() { return serving_.get(); }

 private:
  std::filesystem::path out_dir_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  std::unique_ptr<wire::FederationClient> client_;
  std::map<std::string, SiteKeys> sites_;
  std::map<std::string, wire::Session> joined_;  // each site's last Join
  std::vector<v1::Chunk> last_sent_;
};

}  // namespace cohort::server::testing
