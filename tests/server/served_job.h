#pragma once
// A FederatedJob behind a real gRPC server on 127.0.0.1 (plaintext transport, as
// --insecure runs it; the model streams are sealed all the same), and a raw client of it
// that speaks the protocol as client/agent.cc does: a fresh X25519 key at every Join,
// the global model opened as it is pulled, the update sealed as it is pushed. Hooks let
// a test alter the update before it is sealed (bad values) or after (attacks on the seal).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/chunking.h"
#include "crypto/key_agreement.h"
#include "proto/cohort.grpc.pb.h"
#include "proto/convert.h"
#include "proto/sealing.h"
#include "server/federated_job.h"
#include "server/server.h"

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
inline int ServeOnLoopback(FederatedJob& job, std::shared_ptr<grpc::ServerCredentials> credentials,
                           double linger_seconds, std::future<absl::Status>* serving) {
  auto bound = std::make_shared<std::promise<int>>();
  std::future<int> port = bound->get_future();
  ServerOptions options;
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
  std::vector<v1::Chunk> sealed;    // the chunks as they came over the wire
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
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    stub_ = v1::Federation::NewStub(channel_);
  }
  ~ServedJob() {
    job_->Cancel();
    if (serving_.valid()) serving_.wait();
    std::filesystem::remove_all(out_dir_);
  }

  // Joins with a fresh key pair (or with `public_key` as sent, when given) and agrees the
  // session keys from the reply.
  grpc::Status TryJoin(const std::string& site, uint64_t samples, const std::string* public_key = nullptr) {
    SiteKeys keys;
    keys.own = crypto::GenerateX25519KeyPair();
    grpc::ClientContext context;
    v1::JoinRequest request;
    request.set_site(site);
    request.set_num_samples(samples);
    if (public_key != nullptr) {
      request.set_client_public_key(*public_key);
    } else {
      request.set_client_public_key(reinterpret_cast<const char*>(keys.own.public_key.data()),
                                    keys.own.public_key.size());
    }
    v1::JoinReply reply;
    grpc::Status s = stub_->Join(&context, request, &reply);
    if (!s.ok()) return s;
    EXPECT_EQ(reply.client_id(), site);
    EXPECT_EQ(reply.server_public_key().size(), crypto::kX25519KeySize);
    std::memcpy(keys.server_public.data(), reply.server_public_key().data(),
                std::min(reply.server_public_key().size(), keys.server_public.size()));
    absl::StatusOr<std::shared_ptr<wire::SealedSession>> session = wire::SealedSession::Agree(
        keys.own, reply.server_public_key(), crypto::Side::kClient, reply.job_id(), reply.client_id());
    EXPECT_TRUE(session.ok()) << session.status();
    if (session.ok()) keys.session = *session;
    sites_[site] = std::move(keys);
    return s;
  }
  void Join(const std::string& site, uint64_t samples) {
    const grpc::Status s = TryJoin(site, samples);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // Pulls a task; for TRAIN, opens the model with `open_with` (default: the client's session).
  Pulled Pull(const std::string& client, uint32_t wait_ms = 5000,
              std::shared_ptr<wire::SealedSession> open_with = nullptr) {
    grpc::ClientContext context;
    v1::TaskRequest request;
    request.set_client_id(client);
    request.set_wait_ms(wait_ms);
    auto reader = stub_->PullTask(&context, request);
    v1::TaskMessage message;
    Pulled pulled;
    EXPECT_TRUE(reader->Read(&message));
    pulled.header = message.header();
    while (reader->Read(&message)) pulled.sealed.push_back(message.chunk());
    EXPECT_TRUE(reader->Finish().ok());
    if (pulled.header.kind() != v1::TaskHeader::TRAIN) return pulled;
    if (open_with == nullptr) open_with = session(client);
    absl::StatusOr<core::Manifest> manifest = wire::FromProto(pulled.header.manifest());
    EXPECT_TRUE(manifest.ok());
    const std::shared_ptr<const core::ChunkCodec> opener = open_with->StreamOpener(
        pulled.header.round(), pulled.header.model_version(), pulled.header.chunk_count());
    core::ParameterSetAssembler assembler(*manifest, pulled.header.chunk_count(), pulled.header.chunk_bytes(),
                                          opener.get());
    for (const v1::Chunk& c : pulled.sealed) {
      pulled.opened = assembler.Add(c.index(), c.count(), std::as_bytes(std::span(c.data().data(), c.data().size())));
      if (!pulled.opened.ok()) return pulled;
    }
    absl::StatusOr<core::ParameterSet> model = std::move(assembler).Finish();
    if (!model.ok()) {
      pulled.opened = model.status();
      return pulled;
    }
    pulled.model.assign(model->floats().begin(), model->floats().end());
    return pulled;
  }

  // The update's chunks, sealed by `session` (default: the client's) as the agent seals them.
  std::vector<v1::Chunk> SealUpdate(const std::string& client, uint64_t round, uint64_t version,
                                    const std::vector<float>& values,
                                    std::shared_ptr<wire::SealedSession> seal_with = nullptr) {
    if (seal_with == nullptr) seal_with = session(client);
    std::vector<v1::Chunk> chunks = PlainChunks(values);
    for (v1::Chunk& c : chunks) {
      const std::string plain = c.data();
      EXPECT_TRUE(seal_with->SealChunk(round, version, c.index(), c.count(),
                                       std::as_bytes(std::span(plain.data(), plain.size())), c.mutable_data())
                      .ok());
    }
    return chunks;
  }

  // Streams `values` as an update: header, then the chunks sealed for `round` and
  // `version` (the header's round and base version unless a hook changes them).
  grpc::Status Push(const std::string& client, uint64_t round, uint64_t version, const std::vector<float>& values,
                    uint64_t samples, const PushOptions& options = {}) {
    v1::UpdateHeader header;
    header.set_client_id(client);
    header.set_round(round);
    header.set_base_model_version(version);
    wire::ToProto(SmallManifest(), header.mutable_manifest());
    header.set_num_samples(samples);
    header.set_chunk_bytes(kSmallChunkBytes);
    std::vector<v1::Chunk> chunks = PlainChunks(values);
    header.set_chunk_count(chunks.empty() ? 0 : chunks.front().count());
    if (options.before_sealing) options.before_sealing(header, chunks);
    std::shared_ptr<wire::SealedSession> sealer = options.seal_with ? options.seal_with : session(client);
    for (v1::Chunk& c : chunks) {
      const std::string plain = c.data();
      EXPECT_TRUE(sealer->SealChunk(header.round(), header.base_model_version(), c.index(), c.count(),
                                    std::as_bytes(std::span(plain.data(), plain.size())), c.mutable_data())
                      .ok());
    }
    if (options.after_sealing) options.after_sealing(header, chunks);
    last_sent_ = chunks;
    return Send(header, chunks);
  }
  // The chunks of the last Push as they were sent.
  const std::vector<v1::Chunk>& last_sent() const { return last_sent_; }

  grpc::Status Send(const v1::UpdateHeader& header, const std::vector<v1::Chunk>& chunks) {
    grpc::ClientContext context;
    v1::UpdateReceipt receipt;
    auto writer = stub_->PushUpdate(&context, &receipt);
    v1::UpdateMessage message;
    *message.mutable_header() = header;
    writer->Write(message);
    for (const v1::Chunk& c : chunks) {
      v1::UpdateMessage m;
      *m.mutable_chunk() = c;
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  void Heartbeat(const std::string& client) {
    grpc::ClientContext context;
    v1::HeartbeatRequest request;
    request.set_client_id(client);
    v1::HeartbeatReply reply;
    (void)stub_->Heartbeat(&context, request, &reply);
  }

  const std::shared_ptr<wire::SealedSession>& session(const std::string& site) { return sites_.at(site).session; }
  SiteKeys& keys(const std::string& site) { return sites_.at(site); }
  FederatedJob& job() { return *job_; }
  const std::filesystem::path& out_dir() const { return out_dir_; }
  absl::Status Wait() { return serving_.get(); }

 private:
  static std::vector<v1::Chunk> PlainChunks(const std::vector<float>& values) {
    const auto bytes = std::as_bytes(std::span(values));
    const uint32_t count = core::ChunkCount(bytes.size(), kSmallChunkBytes);
    std::vector<v1::Chunk> chunks(count);
    for (uint32_t i = 0; i < count; ++i) {
      const auto piece = core::ChunkOf(bytes, i, kSmallChunkBytes);
      chunks[i].set_index(i);
      chunks[i].set_count(count);
      chunks[i].set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
    }
    return chunks;
  }

  std::filesystem::path out_dir_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Federation::Stub> stub_;
  std::map<std::string, SiteKeys> sites_;
  std::vector<v1::Chunk> last_sent_;
};

}  // namespace cohort::server::testing
