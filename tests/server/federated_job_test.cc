// A FederatedJob behind a real gRPC server on loopback, driven by raw stubs: honest
// clients, and clients whose updates are malformed, late, or not theirs to send. Every
// model stream is sealed (tests/server/served_job.h); attacks on the seal itself are in
// sealing_test.cc.
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
#include "wire/convert.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

using testing::Pulled;
using testing::PushOptions;
using testing::ServedJob;
using testing::SmallJob;
using testing::SmallManifest;
using v1::TaskHeader;

const size_t kFloats = SmallManifest().num_elements();

TEST(FederatedJobTest, BadUpdatesAreRejectedWithReasonsAndLeaveNoTraceInTheAggregate) {
  core::JobConfig config = SmallJob(/*rounds=*/2, /*per_round=*/4, /*min_clients=*/2, /*heartbeat_timeout_s=*/30);
  // The exact weighted average below needs one site to hold 3/4 of the round's weight,
  // over the default cap of a half (the cap has tests of its own).
  config.federation.max_weight_share = 1.0;
  ServedJob served(config);
  for (const char* site : {"a", "b", "c", "d", "e"}) served.Join(site, 300);

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
                  testing::BeforeSealing([](v1::UpdateHeader& h, std::vector<v1::Chunk>&) {
                    h.mutable_manifest()->mutable_tensors(1)->set_name("layers.0.biass");
                  }));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("layers.0.biass"), std::string::npos) << s.error_message();

  // A NaN in the very last chunk: everything before it was valid and already spooled.
  s = served.Push(selected[1], 1, version, std::vector<float>(kFloats, 9.0f), 100,
                  testing::BeforeSealing([](v1::UpdateHeader&, std::vector<v1::Chunk>& chunks) {
                    std::string data = chunks.back().data();
                    const float nan = std::numeric_limits<float>::quiet_NaN();
                    std::memcpy(data.data() + data.size() - sizeof(float), &nan, sizeof(float));
                    chunks.back().set_data(data);
                  }));
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
  // Round 2 draws 4 of the 5 live sites (by seed), and so may round 1 have, when the job
  // saw all five joined before it started: pull as each site until one is picked.
  Pulled next;
  for (int i = 0; i < 20 && next.header.kind() != TaskHeader::TRAIN; ++i) {
    for (const char* site : {"a", "b", "c", "d", "e"}) {
      next = served.Pull(site, 200);
      if (next.header.kind() == TaskHeader::TRAIN) break;
    }
  }
  ASSERT_EQ(next.header.kind(), TaskHeader::TRAIN);
  EXPECT_EQ(next.header.round(), 2u);
  EXPECT_EQ(next.header.model_version(), version + 1);
  ASSERT_EQ(next.model.size(), kFloats);
  for (float v : next.model) ASSERT_EQ(v, 0.5f);

  // A late update for round 1, now closed.
  s = served.Push(selected[0], 1, version, std::vector<float>(kFloats, 9.0f), 100);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  const nlohmann::json summary = nlohmann::json::parse(served.job().Status().summary_json);
  ASSERT_EQ(summary["rounds"].size(), 1u);
  EXPECT_EQ(summary["rounds"][0]["clients_reported"], 2);
  EXPECT_EQ(summary["rounds"][0]["samples"], 400);
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
  absl::StatusOr<core::Checkpoint> checkpoint = core::ReadCheckpoint(served.out_dir() / "checkpoint.bin", testing::CheckpointKeyOf(served.out_dir()));
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
  const nlohmann::json summary = nlohmann::json::parse(served.job().Status().summary_json);
  ASSERT_EQ(summary["rounds"].size(), 1u);
  EXPECT_EQ(summary["rounds"][0]["attempts"], 2);
}

TEST(FederatedJobTest, ARestartedServerResumesFromItsCheckpoint) {
  char dir_template[] = "/tmp/cohort-resume-test-XXXXXX";
  const std::filesystem::path out = ::mkdtemp(dir_template);
  core::ParameterSet model(SmallManifest());
  for (float& v : model.floats()) v = 7.0f;
  nlohmann::json summary = {{"job", "test-job"}, {"status", "running"}, {"rounds", nlohmann::json::array({{{"round", 1}}})}};
  ASSERT_TRUE(core::WriteCheckpoint(out / "checkpoint.bin", {"test-job", 1, 1, summary, model}, testing::CheckpointKeyOf(out)).ok());
  // What a server killed mid-round leaves in its spool: a partial upload and a kept file.
  std::filesystem::create_directories(out / "spool");
  for (const char* name : {"round-2-site-a-1.update", "round-1-site-b-2.update.kept-0", "operator-notes.txt"}) {
    std::ofstream(out / "spool" / name) << "left behind";
  }
  JobOptions options;
  options.config = SmallJob(3, 1, 1, 30);
  options.initial_model = core::ParameterSet(SmallManifest());
  options.out_dir = out;
  absl::StatusOr<std::unique_ptr<FederatedJob>> job = FederatedJob::Create(std::move(options));
  ASSERT_TRUE(job.ok()) << job.status().message();
  const JobStatus status = (*job)->Status();
  EXPECT_EQ(status.completed_rounds, 1u);
  EXPECT_EQ(status.model_version, 1u);
  // Their keys died with the old process, so they can never be folded; files that are
  // not spooled updates stay.
  EXPECT_FALSE(std::filesystem::exists(out / "spool" / "round-2-site-a-1.update"));
  EXPECT_FALSE(std::filesystem::exists(out / "spool" / "round-1-site-b-2.update.kept-0"));
  EXPECT_TRUE(std::filesystem::exists(out / "spool" / "operator-notes.txt"));

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

TEST(FederatedJobTest, ASiteDeclaringAHugeCountCannotTakeOverTheGlobalModel) {
  core::JobConfig config = SmallJob(/*rounds=*/1, /*per_round=*/4, /*min_clients=*/4, /*heartbeat_timeout_s=*/30);
  config.federation.max_update_norm = 1000;  // the attack stays under the norm bound
  core::ParameterSet initial(SmallManifest());
  for (float& v : initial.floats()) v = 1.0f;
  ServedJob served(config, std::move(initial));
  for (const char* site : {"a", "b", "c"}) served.Join(site, 100);
  served.Join("mallory", 10'000'000);  // the most federation.max_samples_per_site allows
  std::map<std::string, Pulled> tasks;
  for (const char* site : {"a", "b", "c", "mallory"}) {
    tasks[site] = served.Pull(site);
    ASSERT_EQ(tasks[site].header.kind(), TaskHeader::TRAIN) << site;
  }
  const uint64_t version = tasks["a"].header.model_version();
  // Mallory sends delta = -global, which with its claimed weight would zero the model.
  ASSERT_TRUE(served.Push("mallory", 1, version, std::vector<float>(kFloats, -1.0f), 10'000'000).ok());
  for (const char* site : {"a", "b", "c"}) {
    ASSERT_TRUE(served.Push(site, 1, version, std::vector<float>(kFloats, 0.1f), 100).ok()) << site;
  }
  ASSERT_TRUE(served.Wait().ok());
  absl::StatusOr<core::Checkpoint> checkpoint = core::ReadCheckpoint(served.out_dir() / "checkpoint.bin", testing::CheckpointKeyOf(served.out_dir()));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  double norm = 0, initial_norm = static_cast<double>(kFloats);
  for (float v : checkpoint->model.floats()) norm += static_cast<double>(v) * v;
  // Mallory's weight is capped at half the round: 1 + 0.5 * (-1) + 0.5 * 0.1 = 0.55.
  EXPECT_GT(std::sqrt(norm), 0.5 * std::sqrt(initial_norm));
  for (float v : checkpoint->model.floats()) ASSERT_NEAR(v, 0.55f, 1e-5);
}

TEST(FederatedJobTest, AnUpdateMayNotClaimMoreSamplesThanItsSiteDeclared) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/30));
  served.Join("a", 100);
  served.Join("b", 100);
  Pulled a = served.Pull("a");
  ASSERT_EQ(a.header.kind(), TaskHeader::TRAIN);
  const grpc::Status s = served.Push("a", 1, a.header.model_version(), std::vector<float>(kFloats, 1.0f), 101);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("101"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("100 samples"), std::string::npos) << s.error_message();
}

TEST(FederatedJobTest, AJoinDeclaringMoreThanTheBoundIsRefused) {
  core::JobConfig config = SmallJob(/*rounds=*/1, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/30);
  config.federation.max_samples_per_site = 5000;
  ServedJob served(config);
  const grpc::Status s = served.TryJoin("a", 5001);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("5001"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("max_samples_per_site (5000)"), std::string::npos) << s.error_message();
  EXPECT_TRUE(served.TryJoin("a", 5000).ok());
}

TEST(FederatedJobTest, ASiteNameOutsideTheProvisioningRuleCannotJoin) {
  ServedJob served(SmallJob(1, 2, 2, 30));
  for (const std::string& name : std::vector<std::string>{"-dash", "has space", std::string(65, 'x')}) {
    const grpc::Status s = served.TryJoin(name, 10);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
  }
}

}  // namespace
}  // namespace cohort::server
