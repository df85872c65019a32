#include "core/fedavg.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace cohort::core {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::filesystem::path& path) {
  return absl::InternalError(absl::StrCat(what, " ", path.string(), ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const std::byte* data, size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("writing", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadAllAt(int fd, std::byte* data, size_t size, off_t offset, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, data, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("reading", path);
    }
    if (n == 0) return absl::DataLossError(absl::StrCat("spool file ", path.string(), " is short"));
    data += n;
    size -= static_cast<size_t>(n);
    offset += n;
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

UpdateReceiver::UpdateReceiver(ChunkSequence sequence, std::filesystem::path path, int fd, UpdateLimits limits)
    : sequence_(sequence), path_(std::move(path)), fd_(fd), limits_(limits) {}

UpdateReceiver::UpdateReceiver(UpdateReceiver&& other) noexcept
    : sequence_(other.sequence_),
      path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      limits_(other.limits_),
      sum_squares_(other.sum_squares_),
      kept_(other.kept_) {
  other.kept_ = true;  // the moved-from receiver no longer owns the file
}

UpdateReceiver::~UpdateReceiver() {
  if (fd_ >= 0) ::close(fd_);
  if (!kept_ && !path_.empty()) {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
}

absl::StatusOr<UpdateReceiver> UpdateReceiver::Open(const Manifest& manifest, uint32_t declared_count,
                                                    size_t chunk_bytes, std::filesystem::path spool_path,
                                                    UpdateLimits limits) {
  if (!manifest.all_float32()) {
    return absl::InvalidArgumentError("FedAvg aggregates float32 tensors only");
  }
  if (chunk_bytes == 0 || chunk_bytes % sizeof(float) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_bytes: expected a positive multiple of 4, got ", chunk_bytes));
  }
  ChunkSequence sequence(manifest.total_bytes(), declared_count, chunk_bytes);
  const int fd = ::open(spool_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("creating spool file", spool_path);
  return UpdateReceiver(sequence, std::move(spool_path), fd, limits);
}

absl::Status UpdateReceiver::AddChunk(uint32_t index, uint32_t count, std::span<const std::byte> data) {
  if (absl::Status s = sequence_.CheckNext(index, count, data.size()); !s.ok()) return s;
  // Chunks are float-aligned in size (chunk_bytes is a multiple of 4, tensors are float32).
  const size_t n = data.size() / sizeof(float);
  // Eight independent accumulators: one dependent add chain ran at a third of the speed.
  constexpr size_t kLanes = 8;
  double sums[kLanes] = {};
  size_t bad[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    float v[kLanes];
    std::memcpy(v, data.data() + i * sizeof(float), sizeof(v));
    for (size_t l = 0; l < kLanes; ++l) {
      bad[l] += !std::isfinite(v[l]);
      sums[l] += static_cast<double>(v[l]) * v[l];
    }
  }
  for (; i < n; ++i) {
    float v;
    std::memcpy(&v, data.data() + i * sizeof(float), sizeof(float));
    bad[0] += !std::isfinite(v);
    sums[0] += static_cast<double>(v) * v;
  }
  double sum = 0;
  size_t non_finite = 0;
  for (size_t l = 0; l < kLanes; ++l) {
    sum += sums[l];
    non_finite += bad[l];
  }
  if (non_finite > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, " holds ", non_finite, " NaN or Inf values"));
  }
  sum_squares_ += sum;
  if (absl::Status s = WriteAll(fd_, data.data(), data.size(), path_); !s.ok()) return s;
  sequence_.Advance(data.size());
  return absl::OkStatus();
}

absl::StatusOr<SpooledUpdate> UpdateReceiver::Finish(double weight, std::string client_id) {
  if (absl::Status s = sequence_.CheckComplete(); !s.ok()) return s;
  const double norm = std::sqrt(sum_squares_);
  if (limits_.max_l2_norm > 0 && norm > limits_.max_l2_norm) {
    return absl::InvalidArgumentError(absl::StrCat("update L2 norm ", norm,
                                                   " exceeds federation.max_update_norm ",
                                                   limits_.max_l2_norm));
  }
  if (!(weight > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("num_samples: expected > 0, got ", weight));
  }
  if (::close(std::exchange(fd_, -1)) != 0) return ErrnoError("closing", path_);
  kept_ = true;
  return SpooledUpdate{path_, weight, norm, std::move(client_id)};
}

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
      acc_(manifest.total_bytes() / sizeof(float), 0.0f),
      threads_(std::max(1, threads)),
      fold_batch_(std::max(1, fold_batch)) {}

absl::Status StreamingFedAvg::Add(SpooledUpdate update) {
  total_weight_ += update.weight;
  ++count_;
  pending_.push_back(std::move(update));
  if (static_cast<int>(pending_.size()) >= fold_batch_) return Flush();
  return absl::OkStatus();
}

absl::Status StreamingFedAvg::Flush() {
  if (pending_.empty()) return absl::OkStatus();
  std::vector<int> fds;
  absl::Status status = absl::OkStatus();
  for (const SpooledUpdate& u : pending_) {
    const int fd = ::open(u.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      status = ErrnoError("opening spooled update", u.path);
      break;
    }
    fds.push_back(fd);
  }
  // Stream every spool file through a window of `window` floats each, folding all of them
  // into the accumulator in one pass per window.
  constexpr size_t kWindowFloats = 1 << 20;  // 4 MiB per update
  const size_t n = acc_.size();
  if (windows_.size() < fds.size()) windows_.resize(fds.size());
  std::vector<WeightedInput> inputs(fds.size());
  for (size_t begin = 0; status.ok() && begin < n; begin += kWindowFloats) {
    const size_t len = std::min(kWindowFloats, n - begin);
    for (size_t k = 0; k < fds.size() && status.ok(); ++k) {
      if (windows_[k].size() < len) windows_[k].resize(std::min(kWindowFloats, n));
      status = ReadAllAt(fds[k], reinterpret_cast<std::byte*>(windows_[k].data()), len * sizeof(float),
                         static_cast<off_t>(begin * sizeof(float)), pending_[k].path);
      inputs[k] = {static_cast<float>(pending_[k].weight), windows_[k].data()};
    }
    if (status.ok()) FoldWeighted(std::span<float>(acc_).subspan(begin, len), inputs, threads_);
  }
  for (int fd : fds) ::close(fd);
  for (const SpooledUpdate& u : pending_) {
    std::error_code ignored;
    std::filesystem::remove(u.path, ignored);
  }
  pending_.clear();
  return status;
}

absl::Status StreamingFedAvg::ApplyTo(ParameterSet& global) {
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (count_ == 0 || total_weight_ <= 0) {
    return absl::FailedPreconditionError("no accepted updates to aggregate");
  }
  if (absl::Status s = manifest_.CheckSameAs(global.manifest()); !s.ok()) return s;
  std::span<float> g = global.floats();
  const float scale = static_cast<float>(1.0 / total_weight_);
  for (size_t i = 0; i < g.size(); ++i) g[i] += acc_[i] * scale;
  Reset();  // applying twice would count every update twice
  return absl::OkStatus();
}

void StreamingFedAvg::Reset() {
  for (const SpooledUpdate& u : pending_) {
    std::error_code ignored;
    std::filesystem::remove(u.path, ignored);
  }
  pending_.clear();
  std::fill(acc_.begin(), acc_.end(), 0.0f);
  count_ = 0;
  total_weight_ = 0;
}

}  // namespace cohort::core
