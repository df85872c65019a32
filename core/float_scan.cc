#include "core/float_scan.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cohort::core {
namespace {

struct ScanResult {
  double sum_squares = 0;
  size_t non_finite = 0;
};

// The portable scan. Eight independent accumulators: one dependent add chain ran at a
// third of the speed.
ScanResult ScanFloats(const std::byte* bytes, size_t n) {
  constexpr size_t kLanes = 8;
  double sums[kLanes] = {};
  size_t bad[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    float v[kLanes];
    std::memcpy(v, bytes + i * sizeof(float), sizeof(v));
    for (size_t l = 0; l < kLanes; ++l) {
      bad[l] += !std::isfinite(v[l]);
      sums[l] += static_cast<double>(v[l]) * v[l];
    }
  }
  ScanResult result;
  for (; i < n; ++i) {
    float v;
    std::memcpy(&v, bytes + i * sizeof(float), sizeof(float));
    result.non_finite += !std::isfinite(v);
    result.sum_squares += static_cast<double>(v) * v;
  }
  for (size_t l = 0; l < kLanes; ++l) {
    result.sum_squares += sums[l];
    result.non_finite += bad[l];
  }
  return result;
}

#if defined(__x86_64__)
// The same with AVX2 and FMA, chosen at run time: the library is built for baseline
// x86-64, where this loop ran at 7-9 GB/s on a chunk already in cache, a pass the
// server's receive thread makes over every byte of every update. A value is NaN or Inf
// when its exponent bits are all ones; squares are summed in double, as above.
__attribute__((target("avx2,fma"))) ScanResult ScanFloatsAvx2(const std::byte* bytes, size_t n) {
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  const float* p = reinterpret_cast<const float*>(bytes);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(p + i);
    const __m256 b = _mm256_loadu_ps(p + i + 8);
    // cmpeq gives -1 per non-finite lane: subtracting counts them.
    bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(a), exponent), exponent));
    bad = _mm256_sub_epi32(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(b), exponent), exponent));
    const __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    const __m256d a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    const __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(b));
    const __m256d b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
    acc[0] = _mm256_fmadd_pd(a0, a0, acc[0]);
    acc[1] = _mm256_fmadd_pd(a1, a1, acc[1]);
    acc[2] = _mm256_fmadd_pd(b0, b0, acc[2]);
    acc[3] = _mm256_fmadd_pd(b1, b1, acc[3]);
  }
  ScanResult result = ScanFloats(bytes + i * sizeof(float), n - i);  // the tail
  alignas(32) double sums[4];
  _mm256_store_pd(sums, _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3])));
  result.sum_squares += sums[0] + sums[1] + sums[2] + sums[3];
  alignas(32) uint32_t counts[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(counts), bad);
  for (uint32_t c : counts) result.non_finite += c;
  return result;
}
#endif

ScanResult ScanChunkFloats(std::span<const std::byte> plain) {
  // Chunks are float-aligned in size (chunk_bytes is a multiple of 4, tensors are float32).
  const size_t n = plain.size() / sizeof(float);
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return ScanFloatsAvx2(plain.data(), n);
#endif
  return ScanFloats(plain.data(), n);
}

}  // namespace

absl::StatusOr<double> ScanChunk(uint32_t index, std::span<const std::byte> plain) {
  const ScanResult scan = ScanChunkFloats(plain);
  if (scan.non_finite > 0) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, " holds ", scan.non_finite, " NaN or Inf values"));
  }
  return scan.sum_squares;
}

}  // namespace cohort::core
