// The server's evaluation of a round's model runs while the next round trains, and its
// metrics land in that round's summary entry, in order; a crash that leaves a checkpointed
// round untested is made good by the resumed server.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <future>
#include <mutex>

#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

constexpr float kDelta = 0.25f;  // every update: the model after round r holds r * kDelta

// What a test evaluator reports: the model's first value as its "loss", so that an entry's
// test_loss says which model was evaluated.
core::EvalMetrics MetricsOf(const core::ParameterSet& model) {
  return {static_cast<double>(model.floats()[0]), 0.5, 7};
}

class RoundEvaluationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-round-evaluation-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  JobOptions Options(int64_t rounds, Evaluator evaluate) {
    JobOptions options;
    options.config = testing::SmallJob(rounds, /*per_round=*/1, /*min_clients=*/1, 30);
    options.config.name = "evaluated";
    options.initial_model = core::ParameterSet(testing::SmallManifest());
    options.out_dir = dir_ / "out";
    options.evaluate = std::move(evaluate);
    return options;
  }

  // Pulls the next task and, for TRAIN, pushes an update of kDelta everywhere.
  static v1::TaskHeader TrainOnce(wire::FederationClient& client, const wire::Session& session) {
    core::ParameterSet model;
    wire::PullOptions pull;
    pull.wait = std::chrono::milliseconds(10000);
    absl::StatusOr<wire::PulledTask> task = client.PullTask(session, &model, pull);
    EXPECT_TRUE(task.ok()) << task.status();
    if (!task.ok() || task->header.kind() != v1::TaskHeader::TRAIN) return task.ok() ? task->header : v1::TaskHeader();
    core::ParameterSet delta(model.manifest());
    for (float& v : delta.floats()) v = kDelta;
    EXPECT_TRUE(client.PushUpdate(session, wire::UpdateInfoFor(task->header, 10), delta).ok());
    return task->header;
  }

  // A job served on loopback with hospital-a joined. Members end in reverse order: the
  // session and client first, then serving (its future waits for the server), then the job.
  struct Served {
    std::unique_ptr<FederatedJob> job;
    std::future<absl::Status> serving;
    std::unique_ptr<wire::FederationClient> client;
    absl::StatusOr<wire::Session> session = absl::UnknownError("not joined");
  };
  static Served ServeWithOneSite(JobOptions options) {
    Served served;
    absl::StatusOr<std::unique_ptr<FederatedJob>> job = FederatedJob::Create(std::move(options));
    if (!job.ok()) {
      served.session = job.status();
      return served;
    }
    served.job = std::move(*job);
    const int port = testing::ServeOnLoopback(*served.job, nullptr, 0.2, &served.serving);
    served.client = std::make_unique<wire::FederationClient>(wire::Connection{"127.0.0.1:" + std::to_string(port)});
    served.session = served.client->Join("hospital-a", 10);
    return served;
  }

  nlohmann::json Summary() {
    std::ifstream in(dir_ / "out" / "summary.json");
    return nlohmann::json::parse(in);
  }

  std::filesystem::path dir_;
};

TEST_F(RoundEvaluationTest, ARoundsTestRunsWhileTheNextRoundTrainsAndLandsInItsOwnEntry) {
  // Round 1's evaluation cannot finish until the site has been handed round 2: were the
  // evaluation still between the rounds, round 2 would never open and this test would fail.
  std::promise<void> round_two_opened;
  std::shared_future<void> opened = round_two_opened.get_future().share();
  std::mutex mu;
  std::vector<float> evaluated;  // the model value of each evaluation, in order
  auto evaluate = [&](const core::ParameterSet& model) -> absl::StatusOr<core::EvalMetrics> {
    {
      std::lock_guard lock(mu);
      evaluated.push_back(model.floats()[0]);
      if (evaluated.size() == 1 && opened.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
        return absl::DeadlineExceededError("round 2 never opened while round 1 was being evaluated");
      }
    }
    return MetricsOf(model);
  };
  Served served = ServeWithOneSite(Options(/*rounds=*/3, evaluate));
  ASSERT_TRUE(served.session.ok()) << served.session.status();
  wire::FederationClient& client = *served.client;
  const wire::Session& session = *served.session;

  EXPECT_EQ(TrainOnce(client, session).round(), 1u);
  const v1::TaskHeader second = TrainOnce(client, session);  // handed out, trained and pushed
  EXPECT_EQ(second.round(), 2u);
  round_two_opened.set_value();
  EXPECT_EQ(TrainOnce(client, session).round(), 3u);
  ASSERT_TRUE(served.serving.get().ok());

  const nlohmann::json summary = Summary();
  ASSERT_EQ(summary["rounds"].size(), 3u) << summary.dump();
  for (int r = 1; r <= 3; ++r) {
    const nlohmann::json& entry = summary["rounds"][r - 1];
    ASSERT_EQ(entry["round"], r);
    ASSERT_TRUE(entry.contains("test_loss")) << entry.dump();
    EXPECT_FLOAT_EQ(entry["test_loss"].get<float>(), kDelta * static_cast<float>(r)) << "round " << r;
    EXPECT_EQ(entry["test_samples"], 7);
    EXPECT_GE(entry["phase_seconds"]["evaluation"].get<double>(), 0);
  }
  std::lock_guard lock(mu);
  EXPECT_EQ(evaluated, (std::vector<float>{kDelta, 2 * kDelta, 3 * kDelta}));
}

TEST_F(RoundEvaluationTest, AFailedEvaluationFailsTheJobNamingTheRound) {
  auto evaluate = [](const core::ParameterSet& model) -> absl::StatusOr<core::EvalMetrics> {
    if (model.floats()[0] > 1.5f * kDelta) return absl::InternalError("the test set went away");
    return MetricsOf(model);
  };
  Served served = ServeWithOneSite(Options(/*rounds=*/3, evaluate));
  ASSERT_TRUE(served.session.ok()) << served.session.status();
  wire::FederationClient& client = *served.client;
  const wire::Session& session = *served.session;
  for (int i = 0; i < 3 && TrainOnce(client, session).kind() == v1::TaskHeader::TRAIN; ++i) {
  }
  const absl::Status ended = served.serving.get();
  EXPECT_FALSE(ended.ok());
  EXPECT_NE(ended.message().find("evaluating round 2's model: the test set went away"), std::string_view::npos)
      << ended;
  EXPECT_EQ(Summary()["status"], "failed");
}

TEST_F(RoundEvaluationTest, AResumedServerEvaluatesTheRoundItsCrashLeftUntested) {
  {
    JobOptions options = Options(/*rounds=*/2, [](const core::ParameterSet& model) { return MetricsOf(model); });
    // A crash after round 1's checkpoint: its evaluation, which starts after the record,
    // never ran.
    options.after_checkpoint = [](uint64_t round) {
      return round == 1 ? absl::AbortedError("injected crash after the checkpoint of round 1") : absl::OkStatus();
    };
    Served crashed = ServeWithOneSite(std::move(options));
    ASSERT_TRUE(crashed.session.ok()) << crashed.session.status();
    TrainOnce(*crashed.client, *crashed.session);
    EXPECT_FALSE(crashed.serving.get().ok());
  }
  Served resumed =
      ServeWithOneSite(Options(/*rounds=*/2, [](const core::ParameterSet& model) { return MetricsOf(model); }));
  ASSERT_TRUE(resumed.session.ok()) << resumed.session.status();
  EXPECT_EQ(TrainOnce(*resumed.client, *resumed.session).round(), 2u);
  ASSERT_TRUE(resumed.serving.get().ok());
  const nlohmann::json summary = Summary();
  ASSERT_EQ(summary["rounds"].size(), 2u) << summary.dump();
  EXPECT_FLOAT_EQ(summary["rounds"][0]["test_loss"].get<float>(), kDelta) << summary.dump();
  EXPECT_FLOAT_EQ(summary["rounds"][1]["test_loss"].get<float>(), 2 * kDelta) << summary.dump();
}

// A site still downloading a model when its round closes (the round's deadline passed with
// the minimum reported) reads the version it began with to the last byte, while the server
// builds the next model and writes its checkpoint: the model being served is never a
// buffer the close writes into. The checkpoint holds exactly the next model.
TEST_F(RoundEvaluationTest, ADownloadInFlightAcrossTheCloseReadsItsOwnVersionAndTheCheckpointTheNext) {
  JobOptions options = Options(/*rounds=*/2, [](const core::ParameterSet& model) { return MetricsOf(model); });
  options.config.federation.clients_per_round = 2;
  options.config.federation.min_clients = 1;
  options.config.federation.round_timeout_s = 1.0;
  // Round 2 never gets an update (hospital-a stops after round 1, hospital-b is still
  // reading round 1's model): with the default 3 retries of 1 s the job failed and the
  // server went away 4.7 s in, before the 6.4 s download ended. The test cancels the job
  // itself once the download is checked.
  options.config.federation.max_round_retries = 60;
  // 32 MB in 32 chunks of 1 MiB: more than gRPC's window and the socket buffers hold, so
  // the server is still reading the model it serves when the round closes.
  options.config.federation.chunk_bytes = 1 << 20;
  constexpr uint32_t kChunks = 32;
  options.initial_model = core::ParameterSet(core::Manifest({{"layers.0.weight", core::DType::kFloat32, {8192, 1024}}}));
  for (size_t i = 0; i < options.initial_model.floats().size(); ++i) {
    options.initial_model.floats()[i] = static_cast<float>(i % 97);
  }
  const std::vector<float> initial(options.initial_model.floats().begin(), options.initial_model.floats().end());
  auto job = FederatedJob::Create(std::move(options));
  ASSERT_TRUE(job.ok()) << job.status();
  std::future<absl::Status> serving;
  const int port = testing::ServeOnLoopback(**job, nullptr, 0.5, &serving);
  wire::FederationClient fast(wire::Connection{"127.0.0.1:" + std::to_string(port), nullptr, true});
  wire::FederationClient slow(wire::Connection{"127.0.0.1:" + std::to_string(port), nullptr, true});
  absl::StatusOr<wire::Session> a = fast.Join("hospital-a", 10);
  absl::StatusOr<wire::Session> b = slow.Join("hospital-b", 10);
  ASSERT_TRUE(a.ok() && b.ok());

  // hospital-b reads its chunks 200 ms apart: its download (6.4 s) outlasts the 1 s round by
  // far, so that it is still at its first half when round 2 opens even on a loaded machine
  // (at 100 ms apart a close that took 0.6 s longer under load let it read half).
  std::atomic<int> chunks_seen{0};
  auto slow_download = std::async(std::launch::async, [&] {
    core::ParameterSet model;
    wire::PullOptions pull;
    pull.wait = std::chrono::milliseconds(10000);
    pull.on_chunk = [&](const v1::Chunk&) {
      ++chunks_seen;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    };
    absl::StatusOr<wire::PulledTask> task = slow.PullTask(*b, &model, pull);
    std::vector<float> got;
    if (task.ok() && task->download.ok()) got.assign(model.floats().begin(), model.floats().end());
    return std::make_pair(task.ok() ? task->header.round() : 0, got);
  });
  EXPECT_EQ(TrainOnce(fast, *a).round(), 1u);  // round 1 closes at its deadline with hospital-a alone
  // Round 2 opens while hospital-b is still reading round 1's model.
  core::ParameterSet second;
  wire::PullOptions pull;
  pull.wait = std::chrono::milliseconds(10000);
  absl::StatusOr<wire::PulledTask> next = fast.PullTask(*a, &second, pull);
  ASSERT_TRUE(next.ok()) << next.status();
  ASSERT_EQ(next->header.round(), 2u);
  EXPECT_LT(chunks_seen.load(), static_cast<int>(kChunks) / 2) << "the slow download was nearly done at the close";

  auto checkpoint = core::ReadCheckpoint(dir_ / "out" / "checkpoint.bin", testing::CheckpointKeyOf(dir_ / "out"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ(checkpoint->round, 1u);
  for (size_t i = 0; i < initial.size(); ++i) {
    ASSERT_EQ(checkpoint->model.floats()[i], initial[i] + kDelta) << "checkpoint value " << i;
    ASSERT_EQ(second.floats()[i], initial[i] + kDelta) << "round 2's model, value " << i;
  }
  const auto [round, got] = slow_download.get();
  EXPECT_EQ(round, 1u);
  EXPECT_EQ(got, initial) << "the download in flight saw bytes of another version";
  (*job)->Cancel();
  (void)serving.get();
}

}  // namespace
}  // namespace cohort::server
