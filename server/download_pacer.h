#pragma once
// Bounds the model chunks that all downloads hold at once.
//
// A download (server/task_stream.h) seals one chunk into its message and hands it to gRPC,
// which serializes a second copy and keeps it until the socket takes it: about 2.5 chunk
// sizes per stream. Every selected site downloads the round's model at once, so without a
// bound the server's memory grows by that much per site. The pacer lets at most
// `max_in_flight` chunk writes be in gRPC's hands at a time; a download waiting for its
// turn holds no chunk and no thread, and turns are granted in the order they were asked
// for as writes complete. Every site still downloads at once, taking turns chunk by
// chunk, so a round's downloads end together as before.
//
// A site that stops reading would keep its turn for as long as gRPC's flow control holds
// its write, and a site on a slow link keeps it while its window drains. A turn held
// longer than `stall_after` stops counting: the next waiting turn is granted in its place
// (by the pacer's own thread, when no write completes to do it), so slow or stalled sites
// cannot hold up the others, and sites whose writes wait on their links all download at
// once as before; each of them holds at most the one chunk its own stream had in flight
// (and what its window lets gRPC queue, as without the pacer). The bound thus applies
// where it matters: to downloads that the server's cores, not their links, hold back.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace cohort::server {

class DownloadPacer {
 public:
  // Called once the turn is granted, with the turn's number for Release. It must not
  // block: it writes the chunk and returns.
  using Resume = std::function<void(uint64_t turn)>;

  // `max_in_flight` 0: no bound, every turn is granted at once (and no thread is started).
  DownloadPacer(size_t max_in_flight, std::chrono::milliseconds stall_after);
  // Stops the thread. Turns still waiting are dropped unresumed: destroy the pacer only
  // after the calls that asked for them have ended (after the gRPC server is shut down).
  ~DownloadPacer();
  DownloadPacer(const DownloadPacer&) = delete;
  DownloadPacer& operator=(const DownloadPacer&) = delete;

  // Asks for a turn. `resume` is called exactly once unless Cancel withdraws the turn
  // first: on this thread before Acquire returns when a place is free, else later on the
  // thread of a Release or on the pacer's thread. Returns the turn's number.
  uint64_t Acquire(Resume resume);
  // The write of `turn` completed or failed: its place goes to the next waiting turn. A
  // turn that already stopped counting (stalled) frees nothing.
  void Release(uint64_t turn);
  // Withdraws a turn still waiting: true when its `resume` will not be called.
  bool Cancel(uint64_t turn);

  size_t in_flight() const;
  size_t waiting() const;

 private:
  struct Waiting {
    uint64_t turn;
    Resume resume;
  };
  // Moves waiting turns into free places (after counting out stalled holders) and returns
  // them, to be resumed outside the lock.
  std::vector<Waiting> GrantLocked(std::chrono::steady_clock::time_point now);
  static void ResumeAll(std::vector<Waiting> granted);
  void Loop();

  const size_t max_in_flight_;
  const std::chrono::milliseconds stall_after_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::chrono::steady_clock::time_point> holders_;  // turn -> when it was granted
  std::deque<Waiting> waiting_;
  uint64_t next_turn_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace cohort::server
