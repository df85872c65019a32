#pragma once
// Streaming FedAvg. Server memory stays about two models (the running sum and the global
// model) whatever the number of clients:
//
//   1. An UpdateReceiver takes one client's update chunk by chunk as it arrives, opens
//      each chunk (when the update is sealed), checks it (order, size, finite values),
//      keeps its running L2 norm, and spools the chunk to a file exactly as it arrived,
//      still sealed. Nothing reaches the aggregate yet.
//   2. Only an update that arrived complete and valid is handed to StreamingFedAvg::Add.
//      A rejected update (bad last chunk, missing chunk, NaN, norm over the bound, a
//      chunk that does not authenticate) is discarded with its spool file, so it leaves
//      no trace in the aggregate.
//   3. StreamingFedAvg folds accepted updates in batches with one fused, cache-blocked
//      pass: acc[i] += sum_k w_k * u_k[i], reading each update window by window from its
//      spool file and opening its chunks there, so the plaintext exists only in the
//      fold's reused windows and the accumulator is read and written once per batch.
//
// Spool file of one update: its chunks in order, back to back, each exactly as received:
//   chunk i at offset i * (chunk_bytes + overhead), holding that chunk's plaintext size
//   (chunk_bytes, the last one shorter) plus the codec's overhead bytes.
// With a sealing codec (wire/sealing.h) each chunk is nonce || ciphertext || tag
// (crypto/seal.h), overhead 28; without a codec the file is the raw float32 bytes of
// the update in manifest order.
// A compressed update (core/update_compression.h) is spooled the same way, each chunk as
// received (its encoded payload, sealed), but chunks differ in size, so SpooledUpdate
// carries where each one starts; the fold decodes each chunk into its window.
//
// Updates are deltas (trained - global); weights are the clients' sample counts, so
// the new global model is global + sum_k(w_k * delta_k) / sum_k(w_k).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/chunking.h"
#include "core/parameter_set.h"
#include "core/update_compression.h"
#include "storage/file.h"

namespace cohort::core {

struct SpooledUpdate {
  std::filesystem::path path;  // the update's chunks as received (layout above)
  double weight = 0;           // FedAvg weight (samples)
  double l2_norm = 0;
  std::string client_id;
  size_t chunk_bytes = 0;      // plaintext bytes of every chunk but the last
  // Opens the spooled chunks; null: the file is plaintext. Dropped (and with it any key
  // it holds) once the update is folded or discarded.
  std::shared_ptr<const ChunkCodec> codec;
  // How the chunks' payloads are encoded; compressed: chunk i lies at
  // [chunk_offsets[i], chunk_offsets[i + 1]) of the file (one entry per chunk, plus the end).
  UpdateEncoding encoding{};
  std::vector<uint64_t> chunk_offsets{};
};

struct UpdateLimits {
  double max_l2_norm = 0;  // 0: no bound
};

// Receives one update stream. Not thread-safe; one per upload.
class UpdateReceiver {
 public:
  // `manifest` is the expected layout (all float32); `spool_path` is created, or written
  // over from its start when it exists (a file from StreamingFedAvg::ReuseSpoolFile), and
  // Finish cuts it to what was written.
  // `codec` opens the chunks as they arrive (null: they arrive in plaintext); they are
  // spooled as they arrived. `encoding`: how each opened payload is decoded into its
  // chunk's floats, which are what the checks see (DecodeChunk's errors are refusals).
  static absl::StatusOr<UpdateReceiver> Open(const Manifest& manifest, uint32_t declared_count,
                                             size_t chunk_bytes, std::filesystem::path spool_path,
                                             UpdateLimits limits,
                                             std::shared_ptr<const ChunkCodec> codec = nullptr,
                                             UpdateEncoding encoding = {});
  UpdateReceiver(UpdateReceiver&&) noexcept;
  UpdateReceiver& operator=(UpdateReceiver&&) = delete;
  ~UpdateReceiver();  // removes the spool file unless Finish succeeded

  // `data`: the chunk as it arrived (sealed when there is a codec). Errors keep the
  // codec's code (DataLoss: the chunk did not authenticate); the rest are InvalidArgument.
  absl::Status AddChunk(uint32_t index, uint32_t count, std::span<const std::byte> data);
  // The same, but a sealed chunk is opened where it lies, overwriting `data` (the sealed
  // bytes are spooled first): no buffer of a chunk's size per upload, which is what 32
  // concurrent uploads would otherwise add to the server's peak. After a refused chunk
  // the receiver takes nothing more.
  absl::Status AddChunkInPlace(uint32_t index, uint32_t count, std::span<std::byte> data);
  // Checks completeness and the norm bound; on success the spool file is kept and owned
  // by the returned SpooledUpdate.
  absl::StatusOr<SpooledUpdate> Finish(double weight, std::string client_id);

 private:
  UpdateReceiver(ChunkSequence sequence, storage::File file, UpdateLimits limits, size_t chunk_bytes,
                 std::shared_ptr<const ChunkCodec> codec, UpdateEncoding encoding);
  absl::Status Spool(std::span<const std::byte> data);
  // `writable`: `data` itself, when it may be opened in place; empty otherwise.
  absl::Status Receive(uint32_t index, uint32_t count, std::span<const std::byte> data, std::span<std::byte> writable);
  absl::Status ReceiveEncoded(uint32_t index, uint32_t count, std::span<const std::byte> data,
                              std::span<std::byte> writable);

  ChunkSequence sequence_;
  std::filesystem::path path_;
  storage::File file_;  // closed by Finish, which keeps the file; removed otherwise
  UpdateLimits limits_;
  size_t chunk_bytes_;
  std::shared_ptr<const ChunkCodec> codec_;
  UpdateEncoding encoding_;
  std::vector<float> opened_;  // one opened chunk, reused for every chunk of the upload
  std::vector<std::byte> payload_;  // compressed, copied in: one opened payload, reused
  std::vector<uint64_t> chunk_offsets_;  // compressed: where each spooled chunk starts
  uint64_t spooled_bytes_ = 0;  // written to the spool so far: where Finish cuts a reused file
  double sum_squares_ = 0;
  bool kept_ = false;
  bool refused_ = false;  // a chunk was refused after its bytes reached the spool
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
  StreamingFedAvg(const StreamingFedAvg&) = delete;
  StreamingFedAvg& operator=(const StreamingFedAvg&) = delete;
  ~StreamingFedAvg();  // removes pending and kept spool files

  // Spool files of folded (or dropped) updates are kept, up to `fold_batch` of them, in
  // the same directory under a name no update has, for later uploads to write over:
  // writing into page-cache pages that exist is 10-30x faster on this kind of virtual
  // machine than into fresh ones (docs/benchmarks.md). Moves a kept file to `path`, for
  // an UpdateReceiver to write over; false when none is kept. Thread-safe.
  bool ReuseSpoolFile(const std::filesystem::path& path);

  // Takes ownership of the spool file (deleted once folded). A batch holds updates of
  // one spool layout (same codec overhead and chunk size); an update of another layout
  // flushes the batch first.
  absl::Status Add(SpooledUpdate update);
  absl::Status Flush();
  // global + acc / total_weight, computed in the accumulator's own buffer, which becomes
  // the returned model: closing a round costs no third model-sized buffer beside the
  // global model and the accumulator. Starts over empty (the next fold builds a fresh
  // accumulator). Fails when nothing was added or `global` is another layout.
  absl::StatusOr<ParameterSet> TakeNext(const ParameterSet& global);
  // TakeNext's model moved into `global`.
  absl::Status ApplyTo(ParameterSet& global);
  // Drops everything added (round retried): pending spool files are removed.
  void Reset();

  int count() const { return count_; }
  double total_weight() const { return total_weight_; }

 private:
  // Plaintext bytes per read window (whole chunks for sealed spools, at least one).
  static constexpr size_t kWindowBytes = size_t{2} << 20;
  // The most plaintext window bytes one fold thread holds for a batch: a full batch reads
  // narrower windows than a batch of two, so that the server's memory does not grow with
  // the number of updates (a batch of 8 in 2 MiB windows held 32 MiB on two threads).
  static constexpr size_t kBatchWindowBytes = size_t{4} << 20;
  // Updates that can share a batch have equal keys: chunk size, codec overhead, encoding.
  static std::tuple<size_t, size_t, CompressionMethod> LayoutKey(const SpooledUpdate& u) {
    const bool whole_chunks = u.codec != nullptr || u.encoding.compressed();
    return {whole_chunks ? u.chunk_bytes : 0, u.codec == nullptr ? 0 : u.codec->overhead(), u.encoding.method};
  }
  absl::Status FoldPending(const std::vector<storage::File>& files);
  // Flushes; FailedPrecondition when nothing was added or `global` is another layout.
  absl::Status CheckReadyFor(const ParameterSet& global);
  // Keeps a spool file that is done with for ReuseSpoolFile, or removes it.
  void KeepOrRemove(const std::filesystem::path& path);
  static absl::Status ReadWindow(const storage::File& file, const SpooledUpdate& update, size_t begin,
                                 std::span<std::byte> plain, size_t overhead, std::vector<std::byte>& sealed);
  // The same for a compressed update: reads the window's chunks, opens and decodes each.
  static absl::Status ReadEncodedWindow(const storage::File& file, const SpooledUpdate& update, size_t begin,
                                        std::span<std::byte> plain, std::vector<std::byte>& sealed);

  Manifest manifest_;
  // The running sum, float32 in manifest order; made by the first fold of a round (so a
  // job holds no accumulator until updates arrive) and handed over by TakeNext.
  ParameterSet acc_;
  std::vector<SpooledUpdate> pending_;
  // Per fold thread: one plaintext window per update of a batch, and one buffer for the
  // sealed bytes of a window. Kept across Flush calls: allocating them per call made
  // every Flush fault its windows in anew (2.9x slower, docs/benchmarks.md).
  struct ThreadBuffers {
    std::vector<std::vector<float>> windows;
    std::vector<std::byte> sealed;
  };
  std::vector<ThreadBuffers> buffers_;
  std::mutex kept_mu_;
  std::vector<std::filesystem::path> kept_;  // spool files for ReuseSpoolFile
  uint64_t next_kept_ = 0;
  int threads_;
  int fold_batch_;
  int count_ = 0;
  double total_weight_ = 0;
};

}  // namespace cohort::core
