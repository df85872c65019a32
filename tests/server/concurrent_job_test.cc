// The server's concurrent parts driven without a transport: sites on threads of their own
// join, wait for tasks, open the model sealed for them and push sealed updates straight
// into FederatedJob, while an admin changes a parameter, an observer polls everything the
// dashboard and /metrics read, the strategy folds on its thread, each round's model is
// tested on the evaluation thread and the recorder writes the rounds. No gRPC: this is
// the program ThreadSanitizer checks the server's own synchronization with
// (scripts/sanitize.sh thread), where gRPC's uninstrumented threads would hide it.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cmath>
#include <algorithm>
#include <filesystem>
#include <functional>
#include <future>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/chunking.h"
#include "crypto/key_agreement.h"
#include "crypto/seal.h"
#include "server/federated_job.h"
#include "tests/temp_dir.h"
#include "wire/sealing.h"

namespace cohort::server {
namespace {

constexpr int kSites = 6;
constexpr int kRounds = 4;
constexpr size_t kChunkBytes = 4096;

core::Manifest Layout() {
  return core::Manifest({{"layers.0.weight", core::DType::kFloat32, {64, 64}},
                         {"layers.0.bias", core::DType::kFloat32, {300}}});
}

// Site i's update in round r: a different value per site, round and element, so the
// average is only right when every update was folded once with its own weight.
float DeltaOf(int site, uint64_t round, size_t element) {
  return 0.001f * static_cast<float>((site + 1) * (element % 13)) + 0.01f * static_cast<float>(round);
}
uint64_t SamplesOf(int site) { return 100 * static_cast<uint64_t>(site + 1); }

// The sum of the global model after each of `rounds` rounds in which `sites` (by index)
// reported, averaged by their sample counts and added one round at a time.
std::vector<double> ExpectedSums(const std::vector<float>& initial, const std::vector<int>& sites, int rounds,
                                 std::vector<std::vector<double>>* models = nullptr) {
  std::vector<double> model(initial.begin(), initial.end());
  uint64_t total_samples = 0;
  for (int i : sites) total_samples += SamplesOf(i);
  std::vector<double> sums;
  for (int r = 1; r <= rounds; ++r) {
    if (models != nullptr) models->push_back(model);  // what round r was handed
    double sum = 0;
    for (size_t e = 0; e < model.size(); ++e) {
      double average = 0;
      for (int i : sites) average += DeltaOf(i, r, e) * static_cast<double>(SamplesOf(i)) / static_cast<double>(total_samples);
      model[e] += average;
      sum += model[e];
    }
    sums.push_back(sum);
  }
  return sums;
}

class ConcurrentJobTest : public ::testing::Test {
 protected:
  // kSites per round for kRounds rounds, in chunks of kChunkBytes; the evaluator records
  // the sum of each model it tests.
  JobOptions Options(int64_t min_clients, double heartbeat_timeout_s) {
    JobOptions options;
    options.config.name = "concurrent";
    options.config.federation.rounds = kRounds;
    options.config.federation.clients_per_round = kSites;
    options.config.federation.min_clients = min_clients;
    options.config.federation.join_grace_s = 0.2;
    options.config.federation.max_weight_share = 1.0;
    options.config.federation.round_timeout_s = 60;
    options.config.federation.heartbeat_timeout_s = heartbeat_timeout_s;
    options.config.federation.chunk_bytes = kChunkBytes;
    options.initial_model = core::ParameterSet(Layout());
    for (size_t e = 0; e < options.initial_model.floats().size(); ++e) {
      options.initial_model.floats()[e] = 0.5f - 0.001f * static_cast<float>(e % 101);
    }
    options.out_dir = dir_ / "out";
    options.evaluate = [this](const core::ParameterSet& model) -> absl::StatusOr<core::EvalMetrics> {
      double sum = 0;
      for (float v : model.floats()) sum += v;
      std::lock_guard lock(evaluated_mu_);
      evaluated_.push_back(sum);
      return core::EvalMetrics{sum, 0.5, 1};
    };
    return options;
  }
  std::vector<double> Evaluated() {
    std::lock_guard lock(evaluated_mu_);
    return evaluated_;
  }
  nlohmann::json Summary() {
    std::ifstream in(dir_ / "out" / "summary.json");
    return nlohmann::json::parse(in);
  }

  cohort::testing::TempDir temp_;
  const std::filesystem::path& dir_ = temp_.path();
  std::mutex evaluated_mu_;
  std::vector<double> evaluated_;  // each tested model's sum, in the order tested
};

enum class Behavior {
  kHonest,
  kTampers,       // flips a bit of its first sealed chunk in every update
  kFallsSilent,   // takes its first task and is never heard from again
  kWaitsForRevocation,  // takes its first task, signals, and pushes once it has been revoked
};

struct SiteHooks {
  std::function<void()> first_task;        // kWaitsForRevocation: it holds its first task
  std::function<void()> wait_for_revocation;
  std::function<bool()> job_over;          // kFallsSilent: how long to stay silent
};

// One site: joins, then until DONE takes each task, opens every chunk of the model sealed
// for it, and pushes its sealed update, heartbeating while it waits and between chunks.
// Returns why it stopped when something failed; the models it was handed go to
// `models_seen`.
std::string RunSite(FederatedJob& job, int index, std::vector<std::vector<float>>* models_seen,
                    Behavior behavior = Behavior::kHonest, const SiteHooks& hooks = {}) {
  const std::string name = "site-" + std::to_string(index);
  const crypto::X25519KeyPair own = crypto::GenerateX25519KeyPair();
  absl::StatusOr<JoinResult> joined =
      job.Join(name, SamplesOf(index),
               std::string_view(reinterpret_cast<const char*>(own.public_key.data()), own.public_key.size()));
  if (!joined.ok()) return "join: " + std::string(joined.status().message());
  absl::StatusOr<std::shared_ptr<wire::SealedSession>> session =
      wire::SealedSession::Agree(own, joined->server_public_key, crypto::Side::kClient, job.job_id(), name);
  if (!session.ok()) return "agree: " + std::string(session.status().message());

  for (int tasks = 0; tasks < 100; ++tasks) {
    const Task task = job.WaitForTask(joined->client_id, std::chrono::milliseconds(200));
    if (task.kind == Task::Kind::kDone) return task.done_reason == Task::DoneReason::kFinished ? "" : task.message;
    if (task.kind == Task::Kind::kWait) {
      (void)job.Heartbeat(joined->client_id);
      continue;
    }
    if (behavior == Behavior::kFallsSilent) {
      while (!hooks.job_over()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return "silent";
    }
    // The download: every chunk sealed by the server for this site, opened as the site would.
    const std::span<const std::byte> model = task.model->bytes();
    const uint32_t count = core::ChunkCount(model.size(), kChunkBytes);
    std::vector<float> opened(task.model->floats().size());
    const std::shared_ptr<const core::ChunkCodec> opener = (*session)->StreamOpener(task.round, task.model_version, count);
    for (uint32_t i = 0; i < count; ++i) {
      const std::span<const std::byte> piece = core::ChunkOf(model, i, kChunkBytes);
      std::string sealed(crypto::SealedSize(piece.size()), '\0');
      if (absl::Status s = task.session->SealChunk(task.round, task.model_version, i, count, piece,
                                                   std::as_writable_bytes(std::span(sealed.data(), sealed.size())));
          !s.ok()) {
        return "server seal: " + std::string(s.message());
      }
      if (absl::Status s = opener->Open(i, std::as_bytes(std::span(sealed.data(), sealed.size())),
                                        std::as_writable_bytes(std::span(opened)).subspan(i * kChunkBytes, piece.size()));
          !s.ok()) {
        return "open: " + std::string(s.message());
      }
      (void)job.Heartbeat(joined->client_id);
    }
    models_seen->push_back(opened);
    if (behavior == Behavior::kWaitsForRevocation) {
      hooks.first_task();
      hooks.wait_for_revocation();
    }

    core::ParameterSet delta(Layout());
    for (size_t e = 0; e < delta.floats().size(); ++e) delta.floats()[e] = DeltaOf(index, task.round, e);
    UpdateHeader header;
    header.client_id = joined->client_id;
    header.round = task.round;
    header.base_model_version = task.model_version;
    header.manifest = Layout();
    header.num_samples = SamplesOf(index);
    header.chunk_count = count;
    header.chunk_bytes = kChunkBytes;
    header.metrics.steps = 1;
    absl::StatusOr<core::UpdateReceiver> receiver = job.BeginUpdate(header);
    if (!receiver.ok()) return "begin: " + std::string(receiver.status().message());
    for (uint32_t i = 0; i < count; ++i) {
      const std::span<const std::byte> piece = core::ChunkOf(delta.bytes(), i, kChunkBytes);
      std::string sealed(crypto::SealedSize(piece.size()), '\0');
      if (absl::Status s = (*session)->SealChunk(task.round, task.model_version, i, count, piece,
                                                 std::as_writable_bytes(std::span(sealed.data(), sealed.size())));
          !s.ok()) {
        return "seal: " + std::string(s.message());
      }
      if (behavior == Behavior::kTampers && i == 0) sealed[sealed.size() / 2] ^= 0x01;
      if (absl::Status s =
              receiver->AddChunkInPlace(i, count, std::as_writable_bytes(std::span(sealed.data(), sealed.size())));
          !s.ok()) {
        job.RejectUpdate(header, s);
        if (behavior == Behavior::kTampers) break;  // refused, as it should be; next round
        return "chunk: " + std::string(s.message());
      }
    }
    if (behavior == Behavior::kTampers) continue;
    if (absl::Status s = job.CommitUpdate(header, std::move(*receiver)); !s.ok()) {
      return "commit: " + std::string(s.message());
    }
  }
  return "no DONE after 100 tasks";
}

TEST_F(ConcurrentJobTest, SitesAnAdminAndAnObserverOnTheirOwnThreadsMeetTheSequentialAverage) {
  JobOptions options = Options(/*min_clients=*/kSites, /*heartbeat_timeout_s=*/60);
  const std::vector<float> initial(options.initial_model.floats().begin(), options.initial_model.floats().end());
  absl::StatusOr<std::unique_ptr<FederatedJob>> created = FederatedJob::Create(std::move(options));
  ASSERT_TRUE(created.ok()) << created.status();
  FederatedJob& job = **created;

  absl::Status ran;
  std::thread driver([&] { ran = job.Run(); });
  std::vector<std::string> site_errors(kSites);
  std::vector<std::vector<std::vector<float>>> seen(kSites);
  std::vector<std::thread> sites;
  for (int i = 0; i < kSites; ++i) sites.emplace_back([&, i] { site_errors[i] = RunSite(job, i, &seen[i]); });
  std::atomic<bool> done{false};
  std::thread observer([&] {
    while (!done) {
      (void)job.Observe();
      EXPECT_TRUE(nlohmann::json::accept(job.DashboardState()));  // whole JSON at every moment
      (void)job.Status();
      (void)job.BriefStatus();
      (void)job.MetricsPage();
      (void)job.Participants();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  std::thread admin([&] {
    const Actor actor{"alice", "admin"};
    for (int i = 0; i < 5 && !done; ++i) {
      const auto set = job.SetParameter(actor, "learning_rate", 0.01 * (i + 1), "tuning");
      if (!set.ok()) {
        // The four rounds can all end within a few milliseconds, before `done` is set: a
        // change is refused only because the job has finished.
        EXPECT_TRUE(job.finished()) << set.status();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (std::thread& t : sites) t.join();
  driver.join();
  done = true;
  observer.join();
  admin.join();
  ASSERT_TRUE(ran.ok()) << ran;
  for (int i = 0; i < kSites; ++i) EXPECT_EQ(site_errors[i], "") << "site " << i;

  // Every site saw the same model each round, and it is the weighted average of the
  // rounds before, computed here one update at a time.
  std::vector<std::vector<double>> handed;
  const std::vector<double> expected_sums = ExpectedSums(initial, {0, 1, 2, 3, 4, 5}, kRounds, &handed);
  for (int r = 1; r <= kRounds; ++r) {
    for (int i = 0; i < kSites; ++i) {
      ASSERT_EQ(seen[i].size(), static_cast<size_t>(kRounds)) << "site " << i;
      for (size_t e = 0; e < handed[r - 1].size(); e += 97) {
        ASSERT_NEAR(seen[i][r - 1][e], handed[r - 1][e], 1e-5) << "site " << i << " round " << r << " element " << e;
      }
    }
  }
  const std::vector<double> evaluated = Evaluated();
  ASSERT_EQ(evaluated.size(), static_cast<size_t>(kRounds));
  for (int r = 0; r < kRounds; ++r) EXPECT_NEAR(evaluated[r], expected_sums[r], 1e-2) << "round " << r + 1;
  const nlohmann::json summary = Summary();
  ASSERT_EQ(summary["rounds"].size(), static_cast<size_t>(kRounds)) << summary.dump();
  for (int r = 0; r < kRounds; ++r) {
    const nlohmann::json& entry = summary["rounds"][r];
    EXPECT_EQ(entry["round"], r + 1);
    EXPECT_NEAR(entry["test_loss"].get<double>(), expected_sums[r], 1e-2) << entry.dump();
  }
}

// While three honest sites train, one tampers with every update, one falls silent after its
// first task and one is revoked by the admin while it holds its task, each on its own
// thread: every round closes with exactly the honest three, and the model is their average.
TEST_F(ConcurrentJobTest, RoundsGoOnWhileSitesTamperFallSilentAndAreRevokedOnOtherThreads) {
  JobOptions options = Options(/*min_clients=*/3, /*heartbeat_timeout_s=*/1.0);
  const std::vector<float> initial(options.initial_model.floats().begin(), options.initial_model.floats().end());
  absl::StatusOr<std::unique_ptr<FederatedJob>> created = FederatedJob::Create(std::move(options));
  ASSERT_TRUE(created.ok()) << created.status();
  FederatedJob& job = **created;

  absl::Status ran;
  std::atomic<bool> over{false};
  std::thread driver([&] {
    ran = job.Run();
    over = true;
  });
  std::promise<void> holds_task, revoked;
  std::shared_future<void> revoked_future = revoked.get_future().share();
  SiteHooks hooks;
  hooks.first_task = [&] { holds_task.set_value(); };
  hooks.wait_for_revocation = [revoked_future] { revoked_future.wait(); };
  hooks.job_over = [&] { return over.load(); };
  const std::vector<Behavior> behaviors = {Behavior::kHonest,  Behavior::kHonest,      Behavior::kHonest,
                                           Behavior::kTampers, Behavior::kFallsSilent, Behavior::kWaitsForRevocation};
  std::vector<std::string> ended(kSites);
  std::vector<std::vector<std::vector<float>>> seen(kSites);
  std::vector<std::thread> sites;
  for (int i = 0; i < kSites; ++i) {
    sites.emplace_back([&, i] { ended[i] = RunSite(job, i, &seen[i], behaviors[i], hooks); });
  }
  std::thread admin([&] {
    holds_task.get_future().wait();
    EXPECT_TRUE(job.RevokeParticipant({"alice", "admin"}, "site-5", "key leaked").ok());
    revoked.set_value();
  });
  std::thread observer([&] {
    while (!over) {
      (void)job.Observe();
      (void)job.Status();
      (void)job.MetricsPage();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  for (std::thread& t : sites) t.join();
  driver.join();
  admin.join();
  observer.join();
  ASSERT_TRUE(ran.ok()) << ran;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ended[i], "") << "site " << i;
  EXPECT_EQ(ended[4], "silent");
  EXPECT_NE(ended[5], "") << "the revoked site's update was taken";

  const std::vector<double> expected_sums = ExpectedSums(initial, {0, 1, 2}, kRounds);
  const std::vector<double> evaluated = Evaluated();
  ASSERT_EQ(evaluated.size(), static_cast<size_t>(kRounds));
  const nlohmann::json summary = Summary();
  ASSERT_EQ(summary["rounds"].size(), static_cast<size_t>(kRounds)) << summary.dump();
  for (int r = 0; r < kRounds; ++r) {
    EXPECT_NEAR(evaluated[r], expected_sums[r], 1e-2) << "round " << r + 1;
    std::vector<std::string> reported;
    for (const nlohmann::json& c : summary["rounds"][r]["clients"]) reported.push_back(c["site"]);
    std::sort(reported.begin(), reported.end());
    EXPECT_EQ(reported, (std::vector<std::string>{"site-0", "site-1", "site-2"})) << "round " << r + 1;
  }
}

}  // namespace
}  // namespace cohort::server
