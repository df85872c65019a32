#include "core/fedavg.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/float_scan.h"

namespace cohort::core {
namespace {

// Reads exactly data.size() bytes at `offset`: a spool file that ends early lost data.
absl::Status ReadAllAt(const storage::File& file, std::span<std::byte> data, uint64_t offset) {
  absl::StatusOr<size_t> read = file.PreadAll(offset, data);
  if (!read.ok()) return read.status();
  if (*read < data.size()) {
    return absl::DataLossError(absl::StrCat("spool file ", file.path().string(), " is short: ", offset + *read,
                                            " bytes where ", offset + data.size(), " were written"));
  }
  return absl::OkStatus();
}

// Floats per block: the block of the accumulator plus one block per input stays in L2.
constexpr size_t kBlockFloats = 16 * 1024;

void FoldRange(float* acc, size_t begin, size_t end, std::span<const WeightedInput> inputs) {
  for (size_t b = begin; b < end; b += kBlockFloats) {
    const size_t e = std::min(end, b + kBlockFloats);
    size_t k = 0;
    // Four inputs per sweep: acc is loaded and stored once per four updates.
    for (; k + 4 <= inputs.size(); k += 4) {
      const float w0 = inputs[k].weight, w1 = inputs[k + 1].weight;
      const float w2 = inputs[k + 2].weight, w3 = inputs[k + 3].weight;
      const float* __restrict u0 = inputs[k].values;
      const float* __restrict u1 = inputs[k + 1].values;
      const float* __restrict u2 = inputs[k + 2].values;
      const float* __restrict u3 = inputs[k + 3].values;
      for (size_t i = b; i < e; ++i) acc[i] += w0 * u0[i] + w1 * u1[i] + w2 * u2[i] + w3 * u3[i];
    }
    for (; k < inputs.size(); ++k) {
      const float w = inputs[k].weight;
      const float* __restrict u = inputs[k].values;
      for (size_t i = b; i < e; ++i) acc[i] += w * u[i];
    }
  }
}


}  // namespace

void FoldWeighted(std::span<float> acc, std::span<const WeightedInput> inputs, int threads) {
  const size_t n = acc.size();
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n / kBlockFloats) + 1));
  if (threads == 1) {
    FoldRange(acc.data(), 0, n, inputs);
    return;
  }
  // Split on block boundaries so threads never share a cache line.
  const size_t blocks = (n + kBlockFloats - 1) / kBlockFloats;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    const size_t begin = std::min(n, blocks * t / threads * kBlockFloats);
    const size_t end = std::min(n, blocks * (t + 1) / threads * kBlockFloats);
    workers.emplace_back([&, begin, end] { FoldRange(acc.data(), begin, end, inputs); });
  }
  for (std::thread& w : workers) w.join();
}

StreamingFedAvg::StreamingFedAvg(const Manifest& manifest, int threads, int fold_batch)
    : manifest_(manifest),
      threads_(std::max(1, threads)),
      fold_batch_(std::max(1, fold_batch)) {}

StreamingFedAvg::~StreamingFedAvg() {
  std::error_code ignored;
  for (const SpooledUpdate& u : pending_) std::filesystem::remove(u.path, ignored);
  for (const std::filesystem::path& path : kept_) std::filesystem::remove(path, ignored);
}

void StreamingFedAvg::KeepOrRemove(const std::filesystem::path& path) {
  std::error_code error;
  {
    std::lock_guard lock(kept_mu_);
    if (kept_.size() < static_cast<size_t>(fold_batch_)) {
      // A name no update will have; the file keeps its pages in the page cache.
      std::filesystem::path kept = path;
      kept += absl::StrCat(".kept-", next_kept_++);
      std::filesystem::rename(path, kept, error);
      if (!error) {
        kept_.push_back(std::move(kept));
        return;
      }
    }
  }
  std::filesystem::remove(path, error);
}

bool StreamingFedAvg::ReuseSpoolFile(const std::filesystem::path& path) {
  std::lock_guard lock(kept_mu_);
  while (!kept_.empty()) {
    std::filesystem::path kept = std::move(kept_.back());
    kept_.pop_back();
    std::error_code error;
    std::filesystem::rename(kept, path, error);
    if (!error) return true;
    std::filesystem::remove(kept, error);
  }
  return false;
}

absl::Status StreamingFedAvg::Add(SpooledUpdate update) {
  // One layout per batch: the fold reads every update of a batch in the same windows.
  if (!pending_.empty() && LayoutKey(pending_.front()) != LayoutKey(update)) {
    if (absl::Status s = Flush(); !s.ok()) return s;
  }
  total_weight_ += update.weight;
  ++count_;
  pending_.push_back(std::move(update));
  if (static_cast<int>(pending_.size()) >= fold_batch_) return Flush();
  return absl::OkStatus();
}

absl::Status StreamingFedAvg::Flush() {
  if (pending_.empty()) return absl::OkStatus();
  std::vector<storage::File> files;
  absl::Status status = absl::OkStatus();
  for (const SpooledUpdate& u : pending_) {
    absl::StatusOr<storage::File> file = storage::File::Open(u.path, O_RDONLY);
    if (!file.ok()) {
      status = file.status();
      break;
    }
    files.push_back(std::move(*file));
  }
  if (status.ok()) {
    // The round's first fold (the last accumulator became a model, TakeNext): a fresh,
    // zeroed one, built here on the fold thread while uploads still arrive.
    if (acc_.bytes().size() != manifest_.total_bytes()) acc_ = ParameterSet(manifest_);
    status = FoldPending(files);
  }
  files.clear();
  for (const SpooledUpdate& u : pending_) KeepOrRemove(u.path);
  pending_.clear();  // drops the codecs, and with them the keys that opened the chunks
  return status;
}

absl::Status StreamingFedAvg::FoldPending(const std::vector<storage::File>& files) {
  // Windows of whole chunks, so that every sealed chunk is opened exactly once.
  const SpooledUpdate& first = pending_.front();
  const ChunkCodec* codec = first.codec.get();
  const size_t total = manifest_.total_bytes();
  const size_t window_bytes = std::min(kWindowBytes, kBatchWindowBytes / pending_.size());
  const size_t unit = codec != nullptr || first.encoding.compressed() ? first.chunk_bytes : sizeof(float);
  const size_t window = unit * std::max<size_t>(1, window_bytes / unit);
  const size_t overhead = codec != nullptr ? codec->overhead() : 0;
  const size_t windows = (total + window - 1) / window;
  const int workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads_), std::max<size_t>(windows, 1)));
  if (buffers_.size() < static_cast<size_t>(workers)) buffers_.resize(static_cast<size_t>(workers));

  // Each worker takes every workers-th window and does all of it: read (and open) the
  // window of every update into its own buffers, then fold them into its own slice of
  // the accumulator. Reads and opening run on every thread, and no thread waits on
  // another until the end.
  std::atomic<bool> failed{false};
  std::vector<absl::Status> results(static_cast<size_t>(workers));
  auto work = [&](int t) {
    ThreadBuffers& buffers = buffers_[static_cast<size_t>(t)];
    if (buffers.windows.size() < pending_.size()) buffers.windows.resize(pending_.size());
    std::vector<WeightedInput> inputs(pending_.size());
    for (size_t w = static_cast<size_t>(t); w < windows && !failed.load(std::memory_order_relaxed);
         w += static_cast<size_t>(workers)) {
      const size_t begin = w * window;
      const size_t len = std::min(window, total - begin);
      for (size_t k = 0; k < pending_.size(); ++k) {
        std::vector<float>& plain = buffers.windows[k];
        if (plain.size() * sizeof(float) < len) plain.resize(std::min(window, total) / sizeof(float));
        const std::span<std::byte> target = std::as_writable_bytes(std::span(plain)).first(len);
        absl::Status s = ReadWindow(files[k], pending_[k], begin, target, overhead, buffers.sealed);
        if (!s.ok()) {
          results[static_cast<size_t>(t)] = std::move(s);
          failed = true;
          return;
        }
        inputs[k] = {static_cast<float>(pending_[k].weight), plain.data()};
      }
      FoldRange(acc_.floats().data() + begin / sizeof(float), 0, len / sizeof(float), inputs);
    }
  };
  std::vector<std::thread> helpers;
  for (int t = 1; t < workers; ++t) helpers.emplace_back(work, t);
  work(0);
  for (std::thread& h : helpers) h.join();
  for (absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status StreamingFedAvg::ReadWindow(const storage::File& file, const SpooledUpdate& update, size_t begin,
                                         std::span<std::byte> plain, size_t overhead, std::vector<std::byte>& sealed) {
  if (update.encoding.compressed()) return ReadEncodedWindow(file, update, begin, plain, sealed);
  if (update.codec == nullptr) return ReadAllAt(file, plain, begin);
  // The window's chunks lie back to back in the file: one read, then open each.
  const size_t chunk = update.chunk_bytes;
  const size_t first = begin / chunk;
  const size_t chunks = (plain.size() + chunk - 1) / chunk;
  const size_t sealed_size = plain.size() + chunks * overhead;
  if (sealed.size() < sealed_size) sealed.resize(sealed_size);
  if (absl::Status s = ReadAllAt(file, std::span(sealed).first(sealed_size), first * (chunk + overhead)); !s.ok()) {
    return s;
  }
  size_t in = 0;
  for (size_t c = 0; c < chunks; ++c) {
    const size_t size = std::min(chunk, plain.size() - c * chunk);
    absl::Status s = update.codec->Open(static_cast<uint32_t>(first + c), std::span(sealed).subspan(in, size + overhead),
                                        plain.subspan(c * chunk, size));
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("spooled update of ", update.client_id, " (", update.path.string(),
                                                 "): ", s.message()));
    }
    in += size + overhead;
  }
  return absl::OkStatus();
}

absl::Status StreamingFedAvg::ReadEncodedWindow(const storage::File& file, const SpooledUpdate& update, size_t begin,
                                                std::span<std::byte> plain, std::vector<std::byte>& sealed) {
  const size_t chunk = update.chunk_bytes;
  const size_t first = begin / chunk;
  const size_t chunks = (plain.size() + chunk - 1) / chunk;
  const std::vector<uint64_t>& offsets = update.chunk_offsets;
  if (offsets.size() < first + chunks + 1) {
    return absl::DataLossError(absl::StrCat("spooled update of ", update.client_id, " (", update.path.string(),
                                            ") records ", offsets.size(), " chunk offsets; window needs ",
                                            first + chunks + 1));
  }
  // The window's chunks lie back to back in the file: one read, then open and decode each.
  const uint64_t base = offsets[first];
  const size_t bytes = offsets[first + chunks] - base;
  if (sealed.size() < bytes) sealed.resize(bytes);
  if (absl::Status s = ReadAllAt(file, std::span(sealed).first(bytes), base); !s.ok()) return s;
  for (size_t c = 0; c < chunks; ++c) {
    const auto index = static_cast<uint32_t>(first + c);
    std::span<std::byte> payload =
        std::span(sealed).subspan(offsets[first + c] - base, offsets[first + c + 1] - offsets[first + c]);
    absl::Status s = absl::OkStatus();
    if (update.codec != nullptr) {
      absl::StatusOr<std::span<std::byte>> opened = update.codec->OpenInPlace(index, payload);
      if (opened.ok()) payload = *opened;
      s = opened.status();
    }
    const size_t size = std::min(chunk, plain.size() - c * chunk);
    std::span<float> values(reinterpret_cast<float*>(plain.data() + c * chunk), size / sizeof(float));
    if (s.ok()) s = DecodeChunk(update.encoding, index, payload, values);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("spooled update of ", update.client_id, " (", update.path.string(),
                                                 "): ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status StreamingFedAvg::CheckReadyFor(const ParameterSet& global) {
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (count_ == 0 || total_weight_ <= 0) {
    return absl::FailedPreconditionError("no accepted updates to aggregate");
  }
  return manifest_.CheckSameAs(global.manifest());
}

absl::Status StreamingFedAvg::ApplyTo(ParameterSet& global) {
  absl::StatusOr<ParameterSet> next = TakeNext(global);
  if (!next.ok()) return next.status();
  global = std::move(*next);
  return absl::OkStatus();
}

absl::StatusOr<ParameterSet> StreamingFedAvg::TakeNext(const ParameterSet& global) {
  if (absl::Status s = CheckReadyFor(global); !s.ok()) return s;
  std::span<const float> g = global.floats();
  std::span<float> acc = acc_.floats();
  const float scale = static_cast<float>(1.0 / total_weight_);
  for (size_t i = 0; i < acc.size(); ++i) acc[i] = g[i] + acc[i] * scale;
  ParameterSet next = std::move(acc_);
  acc_ = ParameterSet();
  Reset();
  return next;
}

void StreamingFedAvg::Reset() {
  for (const SpooledUpdate& u : pending_) KeepOrRemove(u.path);
  pending_.clear();
  std::span<std::byte> acc = acc_.bytes();
  std::fill(acc.begin(), acc.end(), std::byte{0});
  count_ = 0;
  total_weight_ = 0;
}

}  // namespace cohort::core
