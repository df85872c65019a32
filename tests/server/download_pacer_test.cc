// The turns of model downloads (server/download_pacer.h): at most the bound in gRPC's
// hands, granted in order, withdrawn on cancel, and never held up for good by a stalled site.
#include "server/download_pacer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace cohort::server {
namespace {

using std::chrono::milliseconds;

// Records the turns resumed, in order.
struct Resumed {
  std::mutex mu;
  std::vector<uint64_t> turns;
  DownloadPacer::Resume Recorder() {
    return [this](uint64_t turn) {
      std::lock_guard lock(mu);
      turns.push_back(turn);
    };
  }
  std::vector<uint64_t> Get() {
    std::lock_guard lock(mu);
    return turns;
  }
};

TEST(DownloadPacerTest, GrantsAtMostTheBoundAndTheRestInTheOrderAsked) {
  DownloadPacer pacer(2, milliseconds(60000));
  Resumed resumed;
  std::vector<uint64_t> asked;
  for (int i = 0; i < 5; ++i) asked.push_back(pacer.Acquire(resumed.Recorder()));
  EXPECT_EQ(resumed.Get(), (std::vector<uint64_t>{asked[0], asked[1]}));  // resumed before Acquire returned
  EXPECT_EQ(pacer.in_flight(), 2u);
  EXPECT_EQ(pacer.waiting(), 3u);
  pacer.Release(asked[1]);
  EXPECT_EQ(resumed.Get(), (std::vector<uint64_t>{asked[0], asked[1], asked[2]}));
  pacer.Release(asked[0]);
  pacer.Release(asked[2]);
  EXPECT_EQ(resumed.Get(), asked);
  pacer.Release(asked[3]);
  pacer.Release(asked[4]);
  EXPECT_EQ(pacer.in_flight(), 0u);
  EXPECT_EQ(pacer.waiting(), 0u);
}

TEST(DownloadPacerTest, ACancelledTurnIsNeverResumedAndAGrantedOneCannotBeCancelled) {
  DownloadPacer pacer(1, milliseconds(60000));
  Resumed resumed;
  const uint64_t first = pacer.Acquire(resumed.Recorder());
  const uint64_t second = pacer.Acquire(resumed.Recorder());
  const uint64_t third = pacer.Acquire(resumed.Recorder());
  EXPECT_FALSE(pacer.Cancel(first));  // granted: its write is in flight and ends the call
  EXPECT_TRUE(pacer.Cancel(second));
  EXPECT_FALSE(pacer.Cancel(second));
  pacer.Release(first);
  EXPECT_EQ(resumed.Get(), (std::vector<uint64_t>{first, third}));
}

TEST(DownloadPacerTest, AStalledTurnStopsCountingAndItsLateReleaseFreesNothing) {
  DownloadPacer pacer(1, milliseconds(100));
  Resumed resumed;
  const auto start = std::chrono::steady_clock::now();
  const uint64_t stalled = pacer.Acquire(resumed.Recorder());  // a site that stopped reading
  const uint64_t next = pacer.Acquire(resumed.Recorder());
  for (int i = 0; i < 500 && resumed.Get().size() < 2; ++i) std::this_thread::sleep_for(milliseconds(10));
  ASSERT_EQ(resumed.Get(), (std::vector<uint64_t>{stalled, next})) << "the pacer's thread never granted past the stall";
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(100));
  // The stalled write completes at last: the place it held was given away, so nothing frees.
  pacer.Release(stalled);
  const uint64_t after = pacer.Acquire(resumed.Recorder());
  EXPECT_EQ(resumed.Get().size(), 2u);
  pacer.Release(next);
  EXPECT_EQ(resumed.Get(), (std::vector<uint64_t>{stalled, next, after}));
  pacer.Release(after);
}

TEST(DownloadPacerTest, ZeroMeansNoBound) {
  DownloadPacer pacer(0, milliseconds(100));
  Resumed resumed;
  for (int i = 0; i < 100; ++i) pacer.Acquire(resumed.Recorder());
  EXPECT_EQ(resumed.Get().size(), 100u);
  EXPECT_EQ(pacer.waiting(), 0u);
}

// Streams on threads of their own, each acquiring, "writing" and releasing in turn, and
// resumed on whichever thread frees a place: never more than the bound at once, and every
// stream reaches its last chunk.
TEST(DownloadPacerTest, ConcurrentStreamsNeverExceedTheBoundAndAllFinish) {
  constexpr int kStreams = 16;
  constexpr int kChunks = 200;
  constexpr size_t kBound = 3;
  DownloadPacer pacer(kBound, milliseconds(60000));
  std::atomic<int> writing{0};
  std::atomic<int> most{0};
  std::atomic<int> finished{0};
  struct Stream {
    int chunks_left = kChunks;
  };
  std::vector<Stream> streams(kStreams);
  // A stream's "write" completes on another thread, as gRPC's OnWriteDone would.
  std::mutex completions_mu;
  std::vector<std::pair<int, uint64_t>> completions;
  std::function<void(int)> ask = [&](int s) {
    pacer.Acquire([&, s](uint64_t turn) {
      const int now = ++writing;
      int seen = most.load();
      while (now > seen && !most.compare_exchange_weak(seen, now)) {
      }
      std::lock_guard lock(completions_mu);
      completions.emplace_back(s, turn);
    });
  };
  for (int s = 0; s < kStreams; ++s) ask(s);
  std::vector<std::thread> completers;
  for (int c = 0; c < 4; ++c) {
    completers.emplace_back([&] {
      while (finished < kStreams) {
        std::pair<int, uint64_t> done{-1, 0};
        {
          std::lock_guard lock(completions_mu);
          if (!completions.empty()) {
            done = completions.back();
            completions.pop_back();
          }
        }
        if (done.first < 0) {
          std::this_thread::yield();
          continue;
        }
        --writing;
        const bool last = --streams[done.first].chunks_left == 0;
        pacer.Release(done.second);
        if (last) {
          ++finished;
        } else {
          ask(done.first);
        }
      }
    });
  }
  for (std::thread& t : completers) t.join();
  EXPECT_EQ(finished, kStreams);
  EXPECT_LE(most.load(), static_cast<int>(kBound));
  EXPECT_EQ(most.load(), static_cast<int>(kBound));
  EXPECT_EQ(pacer.in_flight(), 0u);
  EXPECT_EQ(pacer.waiting(), 0u);
}

}  // namespace
}  // namespace cohort::server
