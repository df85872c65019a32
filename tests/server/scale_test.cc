// 200 sites connected to one server, each with a PullTask held open, on loopback: the
// process's thread count does not grow with the number of waiting polls (a waiting poll
// is an entry, not a thread), and when the round opens every one of them is answered
// TRAIN with the whole model at once. Each site has its own channel and TCP connection.
//
// Prints the threads and resident memory of the process (server and clients together:
// the clients use gRPC's callback API, so they add no thread per call either) at 20 and
// at 200 waiting polls; docs/benchmarks.md ("Waiting clients") quotes a run.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "crypto/key_agreement.h"
#include "proto/cohort.grpc.pb.h"
#include "server/federated_job.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

using std::chrono::milliseconds;

size_t ThreadsOfThisProcess() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                           std::filesystem::directory_iterator()));
}

// VmRSS of this process in KiB.
size_t ResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string key;
  size_t value = 0;
  while (status >> key) {
    if (key == "VmRSS:") {
      status >> value;
      return value;
    }
    status.ignore(1 << 10, '\n');
  }
  return 0;
}

// One PullTask in flight, read with gRPC's callback API (no client thread per call).
class HeldPoll final : public grpc::ClientReadReactor<v1::TaskMessage> {
 public:
  HeldPoll(v1::Federation::Stub& stub, const std::string& site) {
    request_.set_client_id(site);
    request_.set_wait_ms(30000);
    stub.async()->PullTask(&context_, &request_, this);
    StartRead(&message_);
    StartCall();
  }
  ~HeldPoll() override {
    context_.TryCancel();
    done_future_.wait();
  }
  void OnReadInitialMetadataDone(bool ok) override { held_.set_value(ok); }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (message_.has_header()) {
      kind_ = message_.header().kind();
    } else {
      ++chunks_;
    }
    StartRead(&message_);
  }
  void OnDone(const grpc::Status& status) override { done_.set_value(status); }

  // True once the server has taken the call and holds it.
  bool HeldWithin(milliseconds wait) {
    return held_future_.wait_for(wait) == std::future_status::ready && held_future_.get();
  }
  bool Answered() { return done_future_.wait_for(milliseconds(0)) == std::future_status::ready; }
  bool AnsweredWithin(milliseconds wait) { return done_future_.wait_for(wait) == std::future_status::ready; }
  grpc::Status status() { return done_future_.get(); }
  v1::TaskHeader::Kind kind() const { return kind_; }
  int chunks() const { return chunks_; }

 private:
  grpc::ClientContext context_;
  v1::TaskRequest request_;
  v1::TaskMessage message_;
  v1::TaskHeader::Kind kind_ = v1::TaskHeader::WAIT;
  int chunks_ = 0;
  std::promise<bool> held_;
  std::shared_future<bool> held_future_ = held_.get_future().share();
  std::promise<grpc::Status> done_;
  std::shared_future<grpc::Status> done_future_ = done_.get_future().share();
};

struct Site {
  std::string name;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Federation::Stub> stub;
};

struct Sample {
  size_t polls, threads, rss_kib;
};

TEST(ServerScale, TwoHundredWaitingPollsAddNoThreads) {
  constexpr int kSites = 200;
  char dir_template[] = "/tmp/cohort-scale-test-XXXXXX";
  const std::filesystem::path dir = ::mkdtemp(dir_template);
  core::JobConfig config = testing::SmallJob(/*rounds=*/1, /*per_round=*/kSites, /*min_clients=*/kSites,
                                             /*heartbeat_timeout_s=*/120);
  config.federation.join_grace_s = 0;
  JobOptions options;
  options.config = config;
  options.initial_model = core::ParameterSet(testing::SmallManifest());
  options.out_dir = dir;
  options.hold = true;  // every poll waits until the test starts the job
  std::unique_ptr<FederatedJob> job = std::move(*FederatedJob::Create(std::move(options)));
  std::future<absl::Status> serving;
  const int port = testing::ServeOnLoopback(*job, nullptr, /*linger_seconds=*/0, &serving);
  ASSERT_NE(port, 0);

  std::vector<Site> sites(kSites);
  for (int i = 0; i < kSites; ++i) {
    Site& site = sites[i];
    site.name = "site-" + std::to_string(i);
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    site.channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(),
                                             arguments);
    site.stub = v1::Federation::NewStub(site.channel);
    const crypto::X25519KeyPair keys = crypto::GenerateX25519KeyPair();
    grpc::ClientContext context;
    v1::JoinRequest request;
    request.set_site(site.name);
    request.set_num_samples(10);
    request.set_client_public_key(reinterpret_cast<const char*>(keys.public_key.data()), keys.public_key.size());
    v1::JoinReply reply;
    const grpc::Status joined = site.stub->Join(&context, request, &reply);
    ASSERT_TRUE(joined.ok()) << site.name << ": " << joined.error_message();
  }

  std::vector<Sample> samples{{0, ThreadsOfThisProcess(), ResidentKiB()}};
  std::vector<std::unique_ptr<HeldPoll>> polls;
  for (const int level : {20, kSites}) {
    while (static_cast<int>(polls.size()) < level) {
      polls.push_back(std::make_unique<HeldPoll>(*sites[polls.size()].stub, sites[polls.size()].name));
    }
    for (auto& poll : polls) ASSERT_TRUE(poll->HeldWithin(milliseconds(20000)));
    std::this_thread::sleep_for(milliseconds(500));  // let any thread the calls started show
    for (auto& poll : polls) ASSERT_FALSE(poll->Answered()) << "a poll was answered while the job was held";
    samples.push_back({polls.size(), ThreadsOfThisProcess(), ResidentKiB()});
  }
  std::cout << "waiting polls | threads | RSS MiB\n";
  for (const Sample& s : samples) {
    std::cout << s.polls << " | " << s.threads << " | " << s.rss_kib / 1024.0 << "\n";
    ::testing::Test::RecordProperty("threads_at_" + std::to_string(s.polls), static_cast<int>(s.threads));
    ::testing::Test::RecordProperty("rss_kib_at_" + std::to_string(s.polls), static_cast<int>(s.rss_kib));
  }
  // A thread per waiting poll would add 180 here.
  EXPECT_LE(samples[2].threads, samples[1].threads + 4);

  // The held polls were waiting at the server: the round's opening answers all of them.
  ASSERT_TRUE(job->Start({"admin", "admin"}).ok());
  const auto start = std::chrono::steady_clock::now();
  for (auto& poll : polls) {
    ASSERT_TRUE(poll->AnsweredWithin(milliseconds(20000)));
    const grpc::Status status = poll->status();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(poll->kind(), v1::TaskHeader::TRAIN);
    EXPECT_EQ(poll->chunks(), static_cast<int>(testing::kSmallChunks));
  }
  std::cout << "all " << kSites << " answered TRAIN with the model in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";

  polls.clear();
  job->Cancel();
  serving.wait();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cohort::server
