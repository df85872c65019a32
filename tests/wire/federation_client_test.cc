// wire::FederationClient's own calls, the ones the agent and the benchmarks make, against
// a real server on loopback (tests/server/served_job.h): the streamed, sealed upload,
// the download into a reused model buffer, and DONE with its typed reason. Attacks on
// the streams go through the same client's test hooks in tests/server/sealing_test.cc.
#include "wire/federation_client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "core/parameter_set.h"
#include "tests/server/served_job.h"

namespace cohort::wire {
namespace {

using server::testing::ServedJob;
using server::testing::SmallJob;
using server::testing::SmallManifest;
using namespace std::chrono_literals;

core::ParameterSet Filled(float value) {
  core::ParameterSet set(SmallManifest());
  for (float& v : set.floats()) v = value;
  return set;
}

// Pulls until the task is DONE (the server answers a short while after the job ends).
PulledTask PullUntilDone(FederationClient& client, const Session& session) {
  PulledTask task;
  for (int i = 0; i < 50 && task.header.kind() != v1::TaskHeader::DONE; ++i) {
    absl::StatusOr<PulledTask> pulled = client.PullTask(session, nullptr, PullOptions{.wait = 200ms});
    if (!pulled.ok()) {
      ADD_FAILURE() << pulled.status();
      break;
    }
    task = std::move(*pulled);
  }
  return task;
}

TEST(FederationClientTest, TwoRoundsThroughTheAgentsCallsEndWithDoneFinished) {
  ServedJob served(SmallJob(/*rounds=*/2, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/30),
                   Filled(2.0f));
  FederationClient client(Connection{served.address()});
  absl::StatusOr<Session> a = client.Join("a", 100);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<Session> b = client.Join("b", 100);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->client_id, "a");
  EXPECT_EQ(a->job_id, "test-job");
  EXPECT_TRUE(client.Heartbeat(*a, 5s).ok());

  core::ParameterSet model;
  absl::StatusOr<PulledTask> task = client.PullTrainTask(*a, &model);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->header.round(), 1u);
  ASSERT_EQ(model.manifest(), SmallManifest());
  for (float v : model.floats()) ASSERT_EQ(v, 2.0f);
  // b only checks the chunks' order and sizes and drops them (the benchmarks' mode).
  absl::StatusOr<PulledTask> b_task = client.PullTrainTask(*b, nullptr);
  ASSERT_TRUE(b_task.ok()) << b_task.status();
  EXPECT_EQ(b_task->model_bytes, model.bytes().size() + server::testing::kSmallChunks * crypto::kSealOverhead);

  // Streamed and sealed chunk by chunk, as the agent pushes: 1 and 3 of equal weight average to 2.
  UpdateInfo info = UpdateInfoFor(task->header, 100);
  info.metrics.train_loss = 0.5;
  ASSERT_TRUE(client.PushUpdate(*a, info, Filled(1.0f)).ok());
  ASSERT_TRUE(client.PushUpdate(*b, UpdateInfoFor(b_task->header, 100), Filled(3.0f)).ok());

  const std::byte* buffer = model.bytes().data();
  task = client.PullTrainTask(*a, &model);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->header.round(), 2u);
  EXPECT_EQ(model.bytes().data(), buffer) << "round 2's model was not opened into round 1's buffer";
  for (float v : model.floats()) ASSERT_EQ(v, 4.0f);
  b_task = client.PullTrainTask(*b, nullptr);
  ASSERT_TRUE(b_task.ok()) << b_task.status();
  ASSERT_TRUE(client.PushUpdate(*a, UpdateInfoFor(task->header, 100), Filled(0.0f)).ok());
  ASSERT_TRUE(client.PushUpdate(*b, UpdateInfoFor(b_task->header, 100), Filled(0.0f)).ok());

  const PulledTask done = PullUntilDone(client, *a);
  ASSERT_EQ(done.header.kind(), v1::TaskHeader::DONE);
  EXPECT_EQ(done.header.done_reason(), v1::FINISHED) << done.header.message();
}

TEST(FederationClientTest, AStoppedJobSaysStopped) {
  ServedJob served(SmallJob(/*rounds=*/3, /*per_round=*/1, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  FederationClient client(Connection{served.address()});
  absl::StatusOr<Session> a = client.Join("a", 100);
  ASSERT_TRUE(a.ok()) << a.status();
  core::ParameterSet model;
  absl::StatusOr<PulledTask> task = client.PullTrainTask(*a, &model);
  ASSERT_TRUE(task.ok()) << task.status();
  ASSERT_TRUE(served.job().Stop({"alice", "admin"}, "enough").ok());
  ASSERT_TRUE(client.PushUpdate(*a, UpdateInfoFor(task->header, 100), Filled(1.0f)).ok());
  const PulledTask done = PullUntilDone(client, *a);
  ASSERT_EQ(done.header.kind(), v1::TaskHeader::DONE);
  EXPECT_EQ(done.header.done_reason(), v1::STOPPED) << done.header.message();
}

TEST(FederationClientTest, AClientTheServerDoesNotKnowIsToldNotJoined) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/1, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  FederationClient client(Connection{served.address()});
  const Session forgotten{"test-job", "ghost", "", 1s, "", nullptr};
  absl::StatusOr<PulledTask> task = client.PullTask(forgotten, nullptr, PullOptions{.wait = 100ms});
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->header.kind(), v1::TaskHeader::DONE);
  EXPECT_EQ(task->header.done_reason(), v1::NOT_JOINED) << task->header.message();
}

TEST(FederationClientTest, NoServerIsUnavailable) {
  FederationClient client(Connection{"127.0.0.1:1"});
  absl::StatusOr<Session> joined = client.Join("a", 1, JoinOptions{.timeout = 2s});
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kUnavailable) << joined.status();
  EXPECT_NE(joined.status().message().find("joining the job at 127.0.0.1:1 as a"), std::string_view::npos)
      << joined.status();
  const Session session{"job", "a", "", 1s, "", nullptr};
  absl::StatusOr<PulledTask> task = client.PullTask(session, nullptr);
  EXPECT_EQ(task.status().code(), absl::StatusCode::kUnavailable) << task.status();
  EXPECT_EQ(client.WaitForConnection(200ms).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cohort::wire
