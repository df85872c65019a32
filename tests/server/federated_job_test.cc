// A FederatedJob behind a real gRPC server on loopback, driven by raw stubs: honest
// clients, and clients whose updates are malformed, late, or not theirs to send.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <future>
#include <limits>
#include <thread>

#include "core/chunking.h"
#include "core/checkpoint.h"
#include "proto/cohort.grpc.pb.h"
#include "proto/convert.h"
#include "server/federated_job.h"
#include "server/server.h"

namespace cohort::server {
namespace {

using v1::TaskHeader;

// Two tensors, 4,352 floats (17,408 bytes): five chunks of 4,096 bytes.
core::Manifest SmallManifest() {
  return core::Manifest({{"layers.0.weight", core::DType::kFloat32, {64, 64}},
                         {"layers.0.bias", core::DType::kFloat32, {256}}});
}

core::JobConfig SmallJob(int64_t rounds, int64_t per_round, int64_t min_clients, double heartbeat_timeout_s) {
  core::JobConfig config;
  config.name = "test-job";
  config.federation.rounds = rounds;
  config.federation.clients_per_round = per_round;
  config.federation.min_clients = min_clients;
  config.federation.round_timeout_s = 30;
  config.federation.heartbeat_timeout_s = heartbeat_timeout_s;
  config.federation.max_round_retries = 2;
  config.federation.chunk_bytes = 4096;
  return config;
}

struct Pulled {
  TaskHeader header;
  std::vector<float> model;
};

class ServedJob {
 public:
  explicit ServedJob(core::JobConfig config) {
    char dir_template[] = "/tmp/cohort-server-test-XXXXXX";
    out_dir_ = ::mkdtemp(dir_template);
    JobOptions options;
    options.config = std::move(config);
    options.initial_model = core::ParameterSet(SmallManifest());
    options.out_dir = out_dir_;
    job_ = std::move(*FederatedJob::Create(std::move(options)));
    std::promise<int> bound;
    ServerOptions server_options;
    server_options.listen_address = "127.0.0.1:0";
    server_options.linger_seconds = 0.2;
    server_options.on_listening = [&bound](int port) { bound.set_value(port); };
    serving_ = std::async(std::launch::async, [this, server_options] { return ServeJob(*job_, server_options); });
    const int port = bound.get_future().get();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    stub_ = v1::Federation::NewStub(channel_);
  }
  ~ServedJob() {
    job_->Cancel();
    if (serving_.valid()) serving_.wait();
    std::filesystem::remove_all(out_dir_);
  }

  void Join(const std::string& site, uint64_t samples) {
    grpc::ClientContext context;
    v1::JoinRequest request;
    request.set_site(site);
    request.set_num_samples(samples);
    v1::JoinReply reply;
    ASSERT_TRUE(stub_->Join(&context, request, &reply).ok());
    ASSERT_EQ(reply.client_id(), site);
  }

  Pulled Pull(const std::string& client, uint32_t wait_ms = 5000) {
    grpc::ClientContext context;
    v1::TaskRequest request;
    request.set_client_id(client);
    request.set_wait_ms(wait_ms);
    auto reader = stub_->PullTask(&context, request);
    v1::TaskMessage message;
    Pulled pulled;
    EXPECT_TRUE(reader->Read(&message));
    pulled.header = message.header();
    while (reader->Read(&message)) {
      const std::string& data = message.chunk().data();
      const size_t old = pulled.model.size();
      pulled.model.resize(old + data.size() / sizeof(float));
      std::memcpy(pulled.model.data() + old, data.data(), data.size());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return pulled;
  }

  // Streams `values` as an update. `tamper` may change the header or the chunks.
  grpc::Status Push(const std::string& client, uint64_t round, uint64_t version, const std::vector<float>& values,
                    uint64_t samples,
                    const std::function<void(v1::UpdateHeader&, std::vector<v1::Chunk>&)>& tamper = {}) {
    const size_t chunk_bytes = 4096;
    const auto bytes = std::as_bytes(std::span(values));
    v1::UpdateHeader header;
    header.set_client_id(client);
    header.set_round(round);
    header.set_base_model_version(version);
    wire::ToProto(SmallManifest(), header.mutable_manifest());
    header.set_num_samples(samples);
    header.set_chunk_bytes(chunk_bytes);
    const uint32_t count = core::ChunkCount(bytes.size(), chunk_bytes);
    header.set_chunk_count(count);
    std::vector<v1::Chunk> chunks(count);
    for (uint32_t i = 0; i < count; ++i) {
      const auto piece = core::ChunkOf(bytes, i, chunk_bytes);
      chunks[i].set_index(i);
      chunks[i].set_count(count);
      chunks[i].set_data(reinterpret_cast<const char*>(piece.data()), piece.size());
    }
    if (tamper) tamper(header, chunks);
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

  FederatedJob& job() { return *job_; }
  const std::filesystem::path& out_dir() const { return out_dir_; }
  absl::Status Wait() { return serving_.get(); }

 private:
  std::filesystem::path out_dir_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Federation::Stub> stub_;
};

const size_t kFloats = SmallManifest().num_elements();

TEST(FederatedJobTest, BadUpdatesAreRejectedWithReasonsAndLeaveNoTraceInTheAggregate) {
  ServedJob served(SmallJob(/*rounds=*/2, /*per_round=*/4, /*min_clients=*/2, /*heartbeat_timeout_s=*/30));
  for (const char* site : {"a", "b", "c", "d", "e"}) served.Join(site, 100);

  // Four of five are selected for round 1; the fifth is told to wait.
  std::vector<std::string> selected, waiting;
  std::map<std::string, Pulled> tasks;
  for (const char* site : {"a", "b", "c", "d", "e"}) {
    Pulled p = served.Pull(site, 3000);
    if (p.header.kind() == TaskHeader::TRAIN) {
      selected.push_back(site);
      EXPECT_EQ(p.header.round(), 1u);
      EXPECT_EQ(p.model.size(), kFloats);
      tasks[site] = p;
    } else {
      EXPECT_EQ(p.header.kind(), TaskHeader::WAIT);
      waiting.push_back(site);
    }
  }
  ASSERT_EQ(selected.size(), 4u);
  ASSERT_EQ(waiting.size(), 1u);
  const uint64_t version = tasks[selected[0]].header.model_version();

  // A client that was not selected may not push.
  grpc::Status s = served.Push(waiting[0], 1, version, std::vector<float>(kFloats, 9.0f), 100);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("not selected"), std::string::npos) << s.error_message();

  // An update for a round that is not open.
  s = served.Push(selected[0], 7, version, std::vector<float>(kFloats, 9.0f), 100);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  // Wrong tensor name: refused before any byte is taken, naming the tensor.
  s = served.Push(selected[0], 1, version, std::vector<float>(kFloats, 9.0f), 100,
                  [](v1::UpdateHeader& h, std::vector<v1::Chunk>&) {
                    h.mutable_manifest()->mutable_tensors(1)->set_name("layers.0.biass");
                  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("layers.0.biass"), std::string::npos) << s.error_message();

  // A NaN in the very last chunk: everything before it was valid and already spooled.
  s = served.Push(selected[1], 1, version, std::vector<float>(kFloats, 9.0f), 100,
                  [](v1::UpdateHeader&, std::vector<v1::Chunk>& chunks) {
                    std::string data = chunks.back().data();
                    const float nan = std::numeric_limits<float>::quiet_NaN();
                    std::memcpy(data.data() + data.size() - sizeof(float), &nan, sizeof(float));
                    chunks.back().set_data(data);
                  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("NaN"), std::string::npos) << s.error_message();

  // Honest clients: 300 samples of +1 and 100 samples of -1 average to 0.5.
  s = served.Push(selected[2], 1, version, std::vector<float>(kFloats, 1.0f), 300);
  EXPECT_TRUE(s.ok()) << s.error_message();
  // A client may report only once per round.
  s = served.Push(selected[2], 1, version, std::vector<float>(kFloats, 1.0f), 300);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  s = served.Push(selected[3], 1, version, std::vector<float>(kFloats, -1.0f), 100);
  EXPECT_TRUE(s.ok()) << s.error_message();

  // The round closed with the honest two; round 2's model is exactly their average.
  Pulled next;
  for (int i = 0; i < 20 && next.header.kind() != TaskHeader::TRAIN; ++i) next = served.Pull(selected[2], 1000);
  ASSERT_EQ(next.header.kind(), TaskHeader::TRAIN);
  EXPECT_EQ(next.header.round(), 2u);
  EXPECT_EQ(next.header.model_version(), version + 1);
  ASSERT_EQ(next.model.size(), kFloats);
  for (float v : next.model) ASSERT_EQ(v, 0.5f);

  // A late update for round 1, now closed.
  s = served.Push(selected[0], 1, version, std::vector<float>(kFloats, 9.0f), 100);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  const nlohmann::json status = served.job().Status();
  ASSERT_EQ(status["summary"]["rounds"].size(), 1u);
  EXPECT_EQ(status["summary"]["rounds"][0]["clients_reported"], 2);
  EXPECT_EQ(status["summary"]["rounds"][0]["samples"], 400);
}

TEST(FederatedJobTest, ARoundCompletesWithoutAClientThatStopsResponding) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/3, /*min_clients=*/2, /*heartbeat_timeout_s=*/1.0));
  for (const char* site : {"a", "b", "c"}) served.Join(site, 10);
  std::map<std::string, Pulled> tasks;
  for (const char* site : {"a", "b", "c"}) tasks[site] = served.Pull(site);
  for (const auto& [site, task] : tasks) ASSERT_EQ(task.header.kind(), TaskHeader::TRAIN) << site;
  // "c" dies after pulling its task: no update, no heartbeat.
  const uint64_t version = tasks["a"].header.model_version();
  EXPECT_TRUE(served.Push("a", 1, version, std::vector<float>(kFloats, 2.0f), 10).ok());
  EXPECT_TRUE(served.Push("b", 1, version, std::vector<float>(kFloats, 4.0f), 10).ok());
  const absl::Status result = served.Wait();
  EXPECT_TRUE(result.ok()) << result.message();
  const nlohmann::json summary = nlohmann::json::parse(
      std::ifstream(served.out_dir() / "summary.json"), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(summary.is_object());
  EXPECT_EQ(summary["status"], "finished");
  EXPECT_EQ(summary["rounds"][0]["clients_reported"], 2);
  // The checkpoint holds the average of the two who reported.
  absl::StatusOr<core::Checkpoint> checkpoint = core::ReadCheckpoint(served.out_dir() / "checkpoint.bin");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_EQ(checkpoint->round, 1u);
  for (float v : checkpoint->model.floats()) ASSERT_EQ(v, 3.0f);
}

TEST(FederatedJobTest, ARoundBelowTheMinimumIsRetriedAndThenCompletes) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/1.0));
  served.Join("a", 10);
  served.Join("b", 10);
  Pulled a = served.Pull("a"), b = served.Pull("b");
  ASSERT_EQ(a.header.kind(), TaskHeader::TRAIN);
  ASSERT_EQ(b.header.kind(), TaskHeader::TRAIN);
  EXPECT_TRUE(served.Push("a", 1, a.header.model_version(), std::vector<float>(kFloats, 1.0f), 10).ok());
  // "b" goes silent: the minimum of two cannot be met, so the round is retried once "b" is back.
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  served.Heartbeat("b");
  served.Heartbeat("a");
  Pulled a2, b2;
  for (int i = 0; i < 10 && a2.header.kind() != TaskHeader::TRAIN; ++i) a2 = served.Pull("a", 1000);
  for (int i = 0; i < 10 && b2.header.kind() != TaskHeader::TRAIN; ++i) b2 = served.Pull("b", 1000);
  ASSERT_EQ(a2.header.kind(), TaskHeader::TRAIN);
  ASSERT_EQ(b2.header.kind(), TaskHeader::TRAIN);
  EXPECT_EQ(a2.header.round(), 1u);
  EXPECT_TRUE(served.Push("a", 1, a2.header.model_version(), std::vector<float>(kFloats, 1.0f), 10).ok());
  EXPECT_TRUE(served.Push("b", 1, b2.header.model_version(), std::vector<float>(kFloats, 3.0f), 10).ok());
  const absl::Status result = served.Wait();
  EXPECT_TRUE(result.ok()) << result.message();
  const nlohmann::json summary = served.job().Status()["summary"];
  ASSERT_EQ(summary["rounds"].size(), 1u);
  EXPECT_EQ(summary["rounds"][0]["attempts"], 2);
}

TEST(FederatedJobTest, ARestartedServerResumesFromItsCheckpoint) {
  char dir_template[] = "/tmp/cohort-resume-test-XXXXXX";
  const std::filesystem::path out = ::mkdtemp(dir_template);
  core::ParameterSet model(SmallManifest());
  for (float& v : model.floats()) v = 7.0f;
  nlohmann::json summary = {{"job", "test-job"}, {"status", "running"}, {"rounds", nlohmann::json::array({{{"round", 1}}})}};
  ASSERT_TRUE(core::WriteCheckpoint(out / "checkpoint.bin", {"test-job", 1, 1, summary, model}).ok());
  JobOptions options;
  options.config = SmallJob(3, 1, 1, 30);
  options.initial_model = core::ParameterSet(SmallManifest());
  options.out_dir = out;
  absl::StatusOr<std::unique_ptr<FederatedJob>> job = FederatedJob::Create(std::move(options));
  ASSERT_TRUE(job.ok()) << job.status().message();
  const nlohmann::json status = (*job)->Status();
  EXPECT_EQ(status["completed_rounds"], 1);
  EXPECT_EQ(status["model_version"], 1);

  // A checkpoint of another job is refused with the reason, not silently reused.
  JobOptions other;
  other.config = SmallJob(3, 1, 1, 30);
  other.config.name = "another-job";
  other.initial_model = core::ParameterSet(SmallManifest());
  other.out_dir = out;
  absl::StatusOr<std::unique_ptr<FederatedJob>> refused = FederatedJob::Create(std::move(other));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("belongs to job"), std::string::npos) << refused.status().message();
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace cohort::server
