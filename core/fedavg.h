#pragma once
// Streaming FedAvg. Server memory stays about two models (the running sum and the global
// model) whatever the number of clients:
//
//   1. An UpdateReceiver takes one client's update chunk by chunk as it arrives, checks
//      each chunk (order, size, finite values), keeps its running L2 norm, and spools the
//      bytes to a file. Nothing reaches the aggregate yet.
//   2. Only an update that arrived complete and valid is handed to StreamingFedAvg::Add.
//      A rejected update (bad last chunk, missing chunk, NaN, norm over the bound) is
//      discarded with its spool file, so it leaves no trace in the aggregate.
//   3. StreamingFedAvg folds accepted updates in batches with one fused, cache-blocked
//      pass: acc[i] += sum_k w_k * u_k[i], reading each update block by block from its
//      spool file, so the accumulator is read and written once per batch, not per update.
//
// Updates are deltas (trained - global); weights are the clients' sample counts, so
// the new global model is global + sum_k(w_k * delta_k) / sum_k(w_k).

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/chunking.h"
#include "core/parameter_set.h"

namespace cohort::core {

struct SpooledUpdate {
  std::filesystem::path path;  // raw float32 bytes in manifest order
  double weight = 0;           // FedAvg weight (samples)
  double l2_norm = 0;
  std::string client_id;
};

struct UpdateLimits {
  double max_l2_norm = 0;  // 0: no bound
};

// Receives one update stream. Not thread-safe; one per upload.
class UpdateReceiver {
 public:
  // `manifest` is the expected layout (all float32); `spool_path` is created (truncated).
  static absl::StatusOr<UpdateReceiver> Open(const Manifest& manifest, uint32_t declared_count,
                                             size_t chunk_bytes, std::filesystem::path spool_path,
                                             UpdateLimits limits);
  UpdateReceiver(UpdateReceiver&&) noexcept;
  UpdateReceiver& operator=(UpdateReceiver&&) = delete;
  ~UpdateReceiver();  // removes the spool file unless Finish succeeded

  absl::Status AddChunk(uint32_t index, uint32_t count, std::span<const std::byte> data);
  // Checks completeness and the norm bound; on success the spool file is kept and owned
  // by the returned SpooledUpdate.
  absl::StatusOr<SpooledUpdate> Finish(double weight, std::string client_id);

 private:
  UpdateReceiver(ChunkSequence sequence, std::filesystem::path path, int fd, UpdateLimits limits);

  ChunkSequence sequence_;
  std::filesystem::path path_;
  int fd_ = -1;
  UpdateLimits limits_;
  double sum_squares_ = 0;
  bool kept_ = false;
};

// One input of the fused fold kernel.
struct WeightedInput {
  float weight;
  const float* values;
};

// acc[i] += sum_k inputs[k].weight * inputs[k].values[i] for i in [0, acc.size()),
// cache-blocked, split over `threads` threads.
void FoldWeighted(std::span<float> acc, std::span<const WeightedInput> inputs, int threads);

class StreamingFedAvg {
 public:
  // `manifest` must be all float32. `fold_batch`: updates folded per pass.
  StreamingFedAvg(const Manifest& manifest, int threads = 2, int fold_batch = 8);

  // Takes ownership of the spool file (deleted once folded).
  absl::Status Add(SpooledUpdate update);
  absl::Status Flush();
  // global += acc / total_weight, then starts over empty. Fails when nothing was added.
  absl::Status ApplyTo(ParameterSet& global);
  // Drops everything added (round retried): pending spool files are removed.
  void Reset();

  int count() const { return count_; }
  double total_weight() const { return total_weight_; }

 private:
  Manifest manifest_;
  std::vector<float> acc_;
  std::vector<SpooledUpdate> pending_;
  // One read window per update of a batch, kept across Flush calls: allocating them per
  // call made every Flush fault its windows in anew (2.9x slower, docs/benchmarks.md).
  std::vector<std::vector<float>> windows_;
  int threads_;
  int fold_batch_;
  int count_ = 0;
  double total_weight_ = 0;
};

}  // namespace cohort::core
