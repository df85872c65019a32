#pragma once
// Data parallelism at one site: W worker processes train one model together, each on its
// shard of every batch, and their gradients are summed by a collective, so that the site's
// update equals one worker's with the whole batch (LocalTrainer does the arithmetic; see
// trainer.h). Worker 0 is the only one that talks to the server: at the start of each round
// it broadcasts the round's order (training config, privacy section, round numbers) and the
// global model, and every worker trains; the others only train (RunFollower).
//
// No LibTorch type here. Implementations: Gloo over TCP through LibTorch's c10d (CPU, with a
// c10d TCPStore rendezvous whose server is worker 0), and NCCL's C API on CUDA devices where
// the build found NCCL and a CUDA LibTorch (COHORT_WITH_NCCL).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "core/parameter_set.h"

namespace cohort::training {

// A group of workers that sum and broadcast buffers. Every call is collective: all workers
// make the same calls, in the same order, with buffers of the same size. A worker that died
// or stalls makes the call fail within the group's timeout (Unavailable, naming the call and
// the timeout), never hang.
class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // `values` becomes the element-wise sum over all workers. Host memory for Gloo, memory of
  // the worker's device for NCCL (see device_memory()).
  virtual absl::Status AllReduceSum(std::span<float> values) = 0;
  // `bytes` becomes rank `root`'s bytes on every worker. Always host memory.
  virtual absl::Status Broadcast(std::span<std::byte> bytes, int root) = 0;
  // Whether AllReduceSum takes device (CUDA) memory.
  virtual bool device_memory() const { return false; }
};

// Where and how a worker joins its group.
struct GroupOptions {
  std::string master_host = "127.0.0.1";  // worker 0's address: the TCPStore rendezvous
  uint16_t master_port = 0;               // worker 0 with 0: an ephemeral port (see port())
  int rank = 0;
  int world_size = 1;
  // Every collective call, and the rendezvous, fails after this long without progress.
  std::chrono::milliseconds timeout{30'000};
  // The address this worker's Gloo transport binds to; empty: 127.0.0.1 when the master
  // host is a loopback address, else this machine's hostname.
  std::string bind_host;
};

// A rendezvous server that listens before the group exists, so that worker 0 can learn its
// port (with master_port 0) and start the other workers with it. Worker 0 makes one, then
// JoinGlooGroup with it; the others join without one.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  virtual uint16_t port() const = 0;
};
absl::StatusOr<std::unique_ptr<Rendezvous>> ListenForWorkers(const GroupOptions& options);

// Joins the Gloo group (blocks until all world_size workers have joined, up to the timeout).
// Worker 0 passes the Rendezvous it made; the others nullptr.
absl::StatusOr<std::unique_ptr<Collective>> JoinGlooGroup(const GroupOptions& options, Rendezvous* rendezvous);

// Whether this build has the NCCL collective (COHORT_WITH_NCCL), and an NCCL group over the
// same rendezvous, for workers that each own one CUDA device (cuda:`local_device`).
bool NcclCompiledIn();
absl::StatusOr<std::unique_ptr<Collective>> JoinNcclGroup(const GroupOptions& options, Rendezvous* rendezvous,
                                                         int local_device);

// What worker 0 tells the others at the start of each round, or that the job is over.
struct RoundOrder {
  bool stop = false;
  core::TrainingConfig config;
  core::PrivacyConfig privacy;
  uint64_t round = 0;
  uint64_t total_rounds = 0;
};

// Worker 0: sends `order`, then (unless it stops the group) the global model's floats.
absl::Status SendRoundOrder(Collective& group, const RoundOrder& order, const core::ParameterSet* global);
// Workers 1..W-1: the next order; the model arrives in `global`, which must be laid out as
// the model's manifest.
absl::StatusOr<RoundOrder> ReceiveRoundOrder(Collective& group, core::ParameterSet& global);

// A string from `root` to every worker (its length first).
absl::Status BroadcastString(Collective& group, std::string& text, int root);

// The half-open range [begin, end) of rows [0, n) that worker `rank` of `size` takes: shards
// differ by at most one row and cover every row once.
struct Shard {
  int64_t begin = 0, end = 0;
};
Shard ShardOf(int64_t n, int rank, int size);

}  // namespace cohort::training
