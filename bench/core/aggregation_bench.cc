// Aggregation throughput: how fast core::FoldWeighted folds K updates of a 25M-parameter
// model (100 MB of float32 each) into the running sum, beside what the machine can read.
//
// Every rate is reported in the same unit: bytes of *updates* consumed per second
// (K x 100 MB per iteration), so a fold and its baseline compare directly.
//
//   BM_FoldWeighted/K/threads     the kernel under test: acc += sum_k w_k * u_k, inputs in RAM.
//   BM_SequentialRead/K/threads   baseline 1: a pure read of the same K+1 arrays (the K
//                                 updates and the accumulator), one array after the other,
//                                 each thread its share of every array.
//   BM_FusedRead/K/threads        baseline 2: the same bytes read side by side, all K+1
//                                 streams advancing together as in the fold.
//                                 Both sum 64-bit words with AVX2 loads into four
//                                 accumulators, so they run at memory speed, and write
//                                 nothing. The baseline for K is the faster of the two: the
//                                 best this machine reads those bytes. fold / baseline is the
//                                 share of the read bandwidth the fold reaches; the fold's
//                                 store of the accumulator is counted against it. The working
//                                 set is the fold's own (K+1 x 100 MB), so caches help both
//                                 alike.
//   BM_FoldAvx2/K/threads         prototype: FoldWeighted's loop, unchanged, compiled for AVX2
//                                 (the library is built for baseline x86-64, i.e. SSE2).
//
// The spool path (what the server runs: updates spooled to files, read back through the
// page cache by StreamingFedAvg::Flush):
//
//   BM_StreamingFedAvgFlush/threads  8 spooled updates -> Add x8 -> Flush (fold_batch 8), in
//                                    steady state: one untimed batch first, since the first
//                                    Flush of a StreamingFedAvg allocates its read windows.
//   BM_SpoolPread                    baseline: the same preads Flush issues (4 MiB windows
//                                    of each file, one thread), no fold.
//   BM_SpoolMmapFold/threads         prototype: map the spool files and fold straight
//                                    from the page cache (no copy into window buffers).
//   BM_SpoolSmallWindowFold/threads  prototype: each thread preads its own 64 KiB windows
//                                    (8 of them fit in L2) and folds them while still cached.
//
// Context for every number here and in bench/server: what a first touch of fresh memory
// costs on the machine (page faults), which any buffer allocated per call pays.
//
//   BM_FirstTouch/huge_pages         map 100 MB of anonymous memory, write every byte, unmap;
//                                    huge_pages 1 asks for transparent huge pages first
//                                    (MADV_HUGEPAGE). BM_Rewrite: the same writes to memory
//                                    already mapped.
//
// Inputs are allocated and touched before timing; the spool files are written once and
// stay in the page cache (each iteration hard-links them, since Flush deletes what it folds).

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/fedavg.h"
#include "core/parameter_set.h"

namespace cohort::core {
namespace {

constexpr size_t kParams = 25'000'000;
constexpr size_t kUpdateBytes = kParams * sizeof(float);
constexpr int kMaxUpdates = 8;
// FoldWeighted's block (core/fedavg.cc): threads split on it, and the AVX2 copy of the
// kernel blocks on it, exactly as the library does.
constexpr size_t kBlockFloats = 16 * 1024;

float WeightOf(int k) { return 0.05f + 0.01f * static_cast<float>(k); }

struct InMemory {
  std::vector<std::vector<float>> updates;
  std::vector<float> acc;

  InMemory() : updates(kMaxUpdates), acc(kParams, 0.0f) {
    for (int k = 0; k < kMaxUpdates; ++k) {
      updates[k].resize(kParams);
      for (size_t i = 0; i < kParams; ++i) updates[k][i] = static_cast<float>((i + k) % 1024) * 1e-4f - 0.05f;
    }
  }
};

InMemory& Data() {
  static InMemory data;
  return data;
}

// Runs fn(share, begin, end) over [0, n) split on block boundaries, one std::thread per share
// when threads > 1: the same split and the same thread start-up cost as FoldWeighted.
template <typename Fn>
void ForEachShare(size_t n, int threads, Fn fn) {
  if (threads <= 1) {
    fn(0, size_t{0}, n);
    return;
  }
  const size_t blocks = (n + kBlockFloats - 1) / kBlockFloats;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    const size_t begin = std::min(n, blocks * t / threads * kBlockFloats);
    const size_t end = std::min(n, blocks * (t + 1) / threads * kBlockFloats);
    workers.emplace_back([&fn, t, begin, end] { fn(t, begin, end); });
  }
  for (std::thread& w : workers) w.join();
}

// The read kernels below must run at memory speed, not at the speed of one add chain:
// 64-bit integer adds (no floating-point ordering to keep), AVX2 loads of 128 bytes per
// stream per step into four independent accumulators. A baseline that is itself
// compute-bound would flatter the fold. Machines without AVX2 get the portable loop.
template <size_t N>
__attribute__((target("avx2"))) uint64_t SumStreamsAvx2(const float* const* streams, size_t begin, size_t end) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = begin;
  for (; i + 32 <= end; i += 32) {
    for (size_t j = 0; j < N; ++j) {
      const auto* p = reinterpret_cast<const __m256i*>(streams[j] + i);
      a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(p));
      a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(p + 1));
      a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(p + 2));
      a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(p + 3));
    }
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < end; ++i) {
    for (size_t j = 0; j < N; ++j) {
      uint32_t word;
      std::memcpy(&word, streams[j] + i, sizeof(word));
      sum += word;
    }
  }
  return sum;
}

template <size_t N>
uint64_t SumStreamsPortable(const float* const* streams, size_t begin, size_t end) {
  uint64_t sum = 0;
  for (size_t i = begin; i < end; ++i) {
    for (size_t j = 0; j < N; ++j) {
      uint32_t word;
      std::memcpy(&word, streams[j] + i, sizeof(word));
      sum += word;
    }
  }
  return sum;
}

// Sum of floats [begin, end) of N arrays read side by side (as the fold reads them, so the
// prefetchers see every stream at once).
template <size_t N>
uint64_t SumStreams(const float* const* streams, size_t begin, size_t end) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2 ? SumStreamsAvx2<N>(streams, begin, end) : SumStreamsPortable<N>(streams, begin, end);
}

uint64_t SumStreams(const std::vector<const float*>& streams, size_t begin, size_t end) {
  switch (streams.size()) {
    case 2: return SumStreams<2>(streams.data(), begin, end);
    case 5: return SumStreams<5>(streams.data(), begin, end);
    case 9: return SumStreams<9>(streams.data(), begin, end);
  }
  std::abort();
}

std::vector<WeightedInput> Inputs(int k_count) {
  std::vector<WeightedInput> inputs;
  for (int k = 0; k < k_count; ++k) inputs.push_back({WeightOf(k), Data().updates[k].data()});
  return inputs;
}

void BM_FoldWeighted(benchmark::State& state) {
  const int k_count = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const std::vector<WeightedInput> inputs = Inputs(k_count);
  std::vector<float>& acc = Data().acc;
  for (auto _ : state) {
    FoldWeighted(acc, inputs, threads);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * k_count * static_cast<int64_t>(kUpdateBytes));
}

// FoldRange of core/fedavg.cc, the same source, compiled for AVX2 (no FMA, so the sums are
// rounded exactly as the SSE2 build rounds them).
__attribute__((target("avx2"))) void FoldRangeAvx2(float* acc, size_t begin, size_t end,
                                                   const std::vector<WeightedInput>& inputs) {
  for (size_t b = begin; b < end; b += kBlockFloats) {
    const size_t e = std::min(end, b + kBlockFloats);
    size_t k = 0;
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

void BM_FoldAvx2(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx2")) return state.SkipWithError("no AVX2 on this CPU");
  const int k_count = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const std::vector<WeightedInput> inputs = Inputs(k_count);
  float* acc = Data().acc.data();
  for (auto _ : state) {
    ForEachShare(kParams, threads, [&](int, size_t begin, size_t end) { FoldRangeAvx2(acc, begin, end, inputs); });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * k_count * static_cast<int64_t>(kUpdateBytes));
}

void BM_FusedRead(benchmark::State& state) {
  const int k_count = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  std::vector<const float*> streams{Data().acc.data()};
  for (int k = 0; k < k_count; ++k) streams.push_back(Data().updates[k].data());
  for (auto _ : state) {
    std::vector<uint64_t> sums(threads, 0);
    ForEachShare(kParams, threads,
                 [&](int share, size_t begin, size_t end) { sums[share] = SumStreams(streams, begin, end); });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * k_count * static_cast<int64_t>(kUpdateBytes));
}

void BM_SequentialRead(benchmark::State& state) {
  const int k_count = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  std::vector<const float*> streams{Data().acc.data()};
  for (int k = 0; k < k_count; ++k) streams.push_back(Data().updates[k].data());
  for (auto _ : state) {
    std::vector<uint64_t> sums(threads, 0);
    ForEachShare(kParams, threads, [&](int share, size_t begin, size_t end) {
      for (const float* stream : streams) sums[share] += SumStreams<1>(&stream, begin, end);
    });
    benchmark::DoNotOptimize(sums.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * k_count * static_cast<int64_t>(kUpdateBytes));
}

// ---- The spool path ----

class SpoolDir {
 public:
  SpoolDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "cohort-aggregation-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    dir_ = pattern;
    for (int k = 0; k < kMaxUpdates; ++k) {
      const std::filesystem::path path = master(k);
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      const auto* bytes = reinterpret_cast<const char*>(Data().updates[k].data());
      size_t off = 0;
      while (fd >= 0 && off < kUpdateBytes) {
        const ssize_t n = ::write(fd, bytes + off, kUpdateBytes - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      if (fd < 0 || off != kUpdateBytes || ::close(fd) != 0) {
        std::perror(path.c_str());
        std::abort();
      }
    }
  }
  ~SpoolDir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::filesystem::path master(int k) const { return dir_ / ("update-" + std::to_string(k) + ".spool"); }

  // A fresh name for update k that shares its pages (Flush deletes the files it folds).
  std::filesystem::path Link(int k) {
    const std::filesystem::path link = dir_ / ("link-" + std::to_string(next_++) + ".spool");
    if (::link(master(k).c_str(), link.c_str()) != 0) {
      std::perror(link.c_str());
      std::abort();
    }
    return link;
  }

 private:
  std::filesystem::path dir_;
  uint64_t next_ = 0;
};

SpoolDir& Spool() {
  static SpoolDir spool;
  return spool;
}

Manifest ModelManifest() { return Manifest({TensorSpec{"weights", DType::kFloat32, {static_cast<int64_t>(kParams)}}}); }

void BM_StreamingFedAvgFlush(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  SpoolDir& spool = Spool();
  StreamingFedAvg fedavg(ModelManifest(), threads, /*fold_batch=*/kMaxUpdates);
  auto spooled_batch = [&spool] {
    std::vector<SpooledUpdate> updates;
    for (int k = 0; k < kMaxUpdates; ++k) updates.push_back({spool.Link(k), 1.0 + k, 0.0, "site-" + std::to_string(k), 0, nullptr});
    return updates;
  };
  auto fold = [&fedavg](std::vector<SpooledUpdate> updates) -> absl::Status {
    for (SpooledUpdate& u : updates) {
      if (absl::Status s = fedavg.Add(std::move(u)); !s.ok()) return s;
    }
    return fedavg.Flush();
  };
  if (absl::Status s = fold(spooled_batch()); !s.ok()) return state.SkipWithError(s.ToString().c_str());
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<SpooledUpdate> updates = spooled_batch();
    state.ResumeTiming();
    if (absl::Status s = fold(std::move(updates)); !s.ok()) return state.SkipWithError(s.ToString().c_str());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kMaxUpdates * static_cast<int64_t>(kUpdateBytes));
}

void ReadAt(int fd, float* out, size_t floats, size_t first_float) {
  auto* dst = reinterpret_cast<char*>(out);
  size_t size = floats * sizeof(float);
  off_t offset = static_cast<off_t>(first_float * sizeof(float));
  while (size > 0) {
    const ssize_t n = ::pread(fd, dst, size, offset);
    if (n <= 0) std::abort();
    dst += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
}

std::vector<int> OpenMasters() {
  std::vector<int> fds;
  for (int k = 0; k < kMaxUpdates; ++k) fds.push_back(::open(Spool().master(k).c_str(), O_RDONLY | O_CLOEXEC));
  return fds;
}

void BM_SpoolPread(benchmark::State& state) {
  constexpr size_t kWindowFloats = 1 << 20;  // Flush's window
  const std::vector<int> fds = OpenMasters();
  std::vector<std::vector<float>> windows(kMaxUpdates, std::vector<float>(kWindowFloats));
  for (auto _ : state) {
    for (size_t begin = 0; begin < kParams; begin += kWindowFloats) {
      const size_t len = std::min(kWindowFloats, kParams - begin);
      for (int k = 0; k < kMaxUpdates; ++k) ReadAt(fds[k], windows[k].data(), len, begin);
    }
    benchmark::ClobberMemory();
  }
  for (int fd : fds) ::close(fd);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kMaxUpdates * static_cast<int64_t>(kUpdateBytes));
}

void BM_SpoolMmapFold(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const std::vector<int> fds = OpenMasters();
  std::vector<float>& acc = Data().acc;
  for (auto _ : state) {
    std::vector<void*> maps;
    std::vector<WeightedInput> inputs;
    for (int k = 0; k < kMaxUpdates; ++k) {
      void* map = ::mmap(nullptr, kUpdateBytes, PROT_READ, MAP_SHARED, fds[k], 0);
      if (map == MAP_FAILED) return state.SkipWithError("mmap failed");
      ::madvise(map, kUpdateBytes, MADV_SEQUENTIAL);
      maps.push_back(map);
      inputs.push_back({WeightOf(k), static_cast<const float*>(map)});
    }
    FoldWeighted(acc, inputs, threads);
    for (void* map : maps) ::munmap(map, kUpdateBytes);
    benchmark::ClobberMemory();
  }
  for (int fd : fds) ::close(fd);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kMaxUpdates * static_cast<int64_t>(kUpdateBytes));
}

void BM_SpoolSmallWindowFold(benchmark::State& state) {
  constexpr size_t kWindowFloats = 16 * 1024;  // 64 KiB per update: 8 windows + acc block fit in L2
  const int threads = static_cast<int>(state.range(0));
  const std::vector<int> fds = OpenMasters();
  std::vector<float>& acc = Data().acc;
  for (auto _ : state) {
    ForEachShare(kParams, threads, [&](int, size_t begin, size_t end) {
      std::vector<std::vector<float>> windows(kMaxUpdates, std::vector<float>(kWindowFloats));
      std::vector<WeightedInput> inputs(kMaxUpdates);
      for (size_t b = begin; b < end; b += kWindowFloats) {
        const size_t len = std::min(kWindowFloats, end - b);
        for (int k = 0; k < kMaxUpdates; ++k) {
          ReadAt(fds[k], windows[k].data(), len, b);
          inputs[k] = {WeightOf(k), windows[k].data()};
        }
        FoldWeighted(std::span<float>(acc).subspan(b, len), inputs, 1);
      }
    });
    benchmark::ClobberMemory();
  }
  for (int fd : fds) ::close(fd);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kMaxUpdates * static_cast<int64_t>(kUpdateBytes));
}

void BM_FirstTouch(benchmark::State& state) {
  const bool huge_pages = state.range(0) != 0;
  for (auto _ : state) {
    void* map = ::mmap(nullptr, kUpdateBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return state.SkipWithError("mmap failed");
    if (huge_pages) ::madvise(map, kUpdateBytes, MADV_HUGEPAGE);
    std::memset(map, 1, kUpdateBytes);
    benchmark::ClobberMemory();
    ::munmap(map, kUpdateBytes);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(kUpdateBytes));
}

void BM_Rewrite(benchmark::State& state) {
  std::vector<float>& acc = Data().acc;
  for (auto _ : state) {
    std::memset(acc.data(), 0, kUpdateBytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(kUpdateBytes));
}

// Memory-bound work of 0.1-1 s per iteration: a few iterations per measurement, wall time.
BENCHMARK(BM_FirstTouch)->ArgName("huge_pages")->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Rewrite)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SequentialRead)
    ->ArgNames({"K", "threads"})
    ->ArgsProduct({{1, 4, 8}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FusedRead)
    ->ArgNames({"K", "threads"})
    ->ArgsProduct({{1, 4, 8}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FoldWeighted)
    ->ArgNames({"K", "threads"})
    ->ArgsProduct({{1, 4, 8}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FoldAvx2)
    ->ArgNames({"K", "threads"})
    ->ArgsProduct({{1, 4, 8}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpoolPread)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamingFedAvgFlush)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpoolMmapFold)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpoolSmallWindowFold)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace cohort::core
