// Model downloads under the server's bound on chunks in flight (server/download_pacer.h):
// sites downloading at once all get their model whole, and a site that stops reading its
// download cannot hold up the others.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <future>
#include <thread>

#include "tests/server/served_job.h"
#include "tests/temp_dir.h"

namespace cohort::server {
namespace {

// 16 MiB in 16 chunks of 1 MiB: more than gRPC's 4 MiB window and the socket buffers hold,
// so a site that stops reading leaves the server's write of its stream unfinished.
constexpr uint32_t kChunks = 16;

class DownloadTest : public ::testing::Test {
 protected:
  JobOptions Options(int64_t sites) {
    JobOptions options;
    options.config = testing::SmallJob(/*rounds=*/1, /*per_round=*/sites, /*min_clients=*/sites, 60);
    options.config.name = "downloads";
    options.config.federation.chunk_bytes = 1 << 20;
    options.initial_model =
        core::ParameterSet(core::Manifest({{"layers.0.weight", core::DType::kFloat32, {kChunks * 1024, 256}}}));
    for (size_t i = 0; i < options.initial_model.floats().size(); ++i) {
      options.initial_model.floats()[i] = static_cast<float>(i % 101);
    }
    options.out_dir = dir_ / "out";
    return options;
  }

  // A job of `sites` sites served with one download turn, every site joined on a
  // connection of its own. Members end in reverse order: sessions and clients first, then
  // serving (its future waits for the server), then the job.
  struct Served {
    std::vector<float> initial;  // the model every download must deliver
    std::unique_ptr<FederatedJob> job;
    std::future<absl::Status> serving;
    std::vector<std::unique_ptr<wire::FederationClient>> clients;
    std::vector<wire::Session> sessions;
    std::string failure;  // why fewer than `sites` joined
    Served() = default;
    Served(Served&&) = default;
    // A test that stops early still ends the job, so that `serving` can end.
    ~Served() {
      if (job != nullptr) job->Cancel();
    }
  };
  Served ServeOneTurn(int sites) {
    Served served;
    JobOptions options = Options(sites);
    served.initial.assign(options.initial_model.floats().begin(), options.initial_model.floats().end());
    absl::StatusOr<std::unique_ptr<FederatedJob>> job = FederatedJob::Create(std::move(options));
    if (!job.ok()) {
      served.failure = std::string(job.status().message());
      return served;
    }
    served.job = std::move(*job);
    const int port = testing::ServeOnLoopback(*served.job, nullptr, 0.2, &served.serving, /*downloads_in_flight=*/1);
    for (int i = 0; i < sites; ++i) {
      served.clients.push_back(std::make_unique<wire::FederationClient>(
          wire::Connection{"127.0.0.1:" + std::to_string(port), nullptr, /*own_connection=*/true}));
      absl::StatusOr<wire::Session> joined = served.clients.back()->Join("hospital-" + std::to_string(i), 10);
      if (!joined.ok()) {
        served.failure = std::string(joined.status().message());
        return served;
      }
      served.sessions.push_back(*joined);
    }
    return served;
  }

  cohort::testing::TempDir temp_;
  const std::filesystem::path& dir_ = temp_.path();
};

// Pulls the round's model; `on_chunk` sees each chunk as it comes.
std::pair<absl::Status, std::vector<float>> Download(wire::FederationClient& client, const wire::Session& session,
                                                     std::function<void(const v1::Chunk&)> on_chunk = nullptr) {
  core::ParameterSet model;
  wire::PullOptions pull;
  pull.wait = std::chrono::milliseconds(20000);
  pull.on_chunk = std::move(on_chunk);
  absl::StatusOr<wire::PulledTask> task = client.PullTask(session, &model, pull);
  if (!task.ok()) return {task.status(), {}};
  if (task->header.kind() != v1::TaskHeader::TRAIN) return {absl::InternalError("no TRAIN task"), {}};
  if (!task->download.ok()) return {task->download, {}};
  return {absl::OkStatus(), std::vector<float>(model.floats().begin(), model.floats().end())};
}

TEST_F(DownloadTest, SitesDownloadingAtOnceThroughOneTurnEachGetTheWholeModel) {
  constexpr int kSites = 5;
  Served served = ServeOneTurn(kSites);
  ASSERT_EQ(served.sessions.size(), static_cast<size_t>(kSites)) << served.failure;
  std::vector<std::future<std::pair<absl::Status, std::vector<float>>>> downloads;
  for (int i = 0; i < kSites; ++i) {
    downloads.push_back(std::async(std::launch::async, [&, i] { return Download(*served.clients[i], served.sessions[i]); }));
  }
  for (int i = 0; i < kSites; ++i) {
    auto [status, model] = downloads[i].get();
    ASSERT_TRUE(status.ok()) << "site " << i << ": " << status;
    EXPECT_TRUE(model == served.initial) << "site " << i << " got another model";
  }
  served.job->Cancel();
  (void)served.serving.get();
}

// hospital-0 takes its first chunk and then stops reading until the others are done. With
// one chunk in flight allowed, its stalled write would hold the only turn for good; it stops
// counting after FederationService::kDownloadStallAfter, and the others download.
TEST_F(DownloadTest, ASiteThatStopsReadingDoesNotHoldUpTheOthers) {
  constexpr int kSites = 3;
  Served served = ServeOneTurn(kSites);
  ASSERT_EQ(served.sessions.size(), static_cast<size_t>(kSites)) << served.failure;
  std::promise<void> others_done;
  std::shared_future<void> resume = others_done.get_future().share();
  std::atomic<int> stalled_chunks{0};
  auto stalled = std::async(std::launch::async, [&] {
    return Download(*served.clients[0], served.sessions[0], [&](const v1::Chunk&) {
      if (++stalled_chunks == 1) resume.wait_for(std::chrono::seconds(60));
    });
  });
  while (stalled_chunks == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto start = std::chrono::steady_clock::now();
  auto first = std::async(std::launch::async, [&] { return Download(*served.clients[1], served.sessions[1]); });
  auto second = std::async(std::launch::async, [&] { return Download(*served.clients[2], served.sessions[2]); });
  // Without the stall rule these would wait as long as hospital-0 does (60 s).
  ASSERT_EQ(first.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "held up by the stalled site";
  ASSERT_EQ(second.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "held up by the stalled site";
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(waited, 20) << "the other downloads waited " << waited << " s";
  EXPECT_EQ(stalled_chunks.load(), 1) << "hospital-0 read on while it should have been stalled";
  for (auto* f : {&first, &second}) {
    auto [status, model] = f->get();
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_TRUE(model == served.initial);
  }
  others_done.set_value();
  auto [status, model] = stalled.get();
  ASSERT_TRUE(status.ok()) << "the stalled site's download did not finish once it read again: " << status;
  EXPECT_TRUE(model == served.initial);
  served.job->Cancel();
  (void)served.serving.get();
}

}  // namespace
}  // namespace cohort::server
