// Cost of private set intersection (crypto/psi.h): the two group operations alone
// (libsodium, one core), HashAndBlind and Blind over a list at 1 and 2 threads, and a whole
// two-party ring without the network (100,000 identifiers each, half of them shared).
//
// The floor to compare with: one core of the build machines does about 26,500 ristretto255
// scalar multiplications and 98,000 hashes to the group per second, so a two-party run of
// 100k x 100k costs each party about 200k multiplications and 100k hashes, about 8.6 s of one
// core (17 s for both parties, as BM_TwoPartyRing runs them). Rows report items (identifiers
// or points) per second.
//
// Quick check: cohort_psi_bench --benchmark_filter='HashToGroup|ScalarMult|ids:10000/'
// Real measurement (Release build, idle machine): cohort_psi_bench

#include <benchmark/benchmark.h>
#include <sodium.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/psi.h"

namespace cohort::crypto::psi {
namespace {

constexpr std::string_view kDomain = "benchmark-job";

std::vector<std::string> Identifiers(std::size_t first, std::size_t count) {
  std::vector<std::string> ids;
  ids.reserve(count);
  for (std::size_t i = first; i < first + count; ++i) ids.push_back(absl::StrCat("patient-", i));
  return ids;
}

// SHA-512 of a 20-byte input, then crypto_core_ristretto255_from_hash: H(x) without the
// domain prefix, one identifier per iteration.
void BM_HashToGroup(benchmark::State& state) {
  if (sodium_init() < 0) return state.SkipWithError("sodium_init failed");
  unsigned char input[20] = "patient-0000000000";
  unsigned char digest[crypto_hash_sha512_BYTES];
  unsigned char point[crypto_core_ristretto255_BYTES];
  std::uint64_t counter = 0;
  for (auto _ : state) {
    ++counter;
    std::memcpy(input + 8, &counter, sizeof(counter));
    crypto_hash_sha512(digest, input, sizeof(input));
    crypto_core_ristretto255_from_hash(point, digest);
    benchmark::DoNotOptimize(point);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HashToGroup)->MinTime(0.5);

// crypto_scalarmult_ristretto255 of one point per iteration.
void BM_ScalarMult(benchmark::State& state) {
  if (sodium_init() < 0) return state.SkipWithError("sodium_init failed");
  unsigned char scalar[crypto_core_ristretto255_SCALARBYTES];
  crypto_core_ristretto255_scalar_random(scalar);
  unsigned char point[crypto_core_ristretto255_BYTES];
  crypto_core_ristretto255_random(point);
  unsigned char out[crypto_core_ristretto255_BYTES];
  for (auto _ : state) {
    if (crypto_scalarmult_ristretto255(out, scalar, point) != 0) {
      return state.SkipWithError("scalarmult failed");
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ScalarMult)->MinTime(0.5);

// Args: identifiers, threads.
void BM_HashAndBlind(benchmark::State& state) {
  const std::vector<std::string> ids = Identifiers(0, static_cast<std::size_t>(state.range(0)));
  const int threads = static_cast<int>(state.range(1));
  const Scalar key = Scalar::Random();
  for (auto _ : state) {
    std::vector<Point> blinded = HashAndBlind(kDomain, ids, key, threads);
    benchmark::DoNotOptimize(blinded.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_Blind(benchmark::State& state) {
  const std::vector<Point> points = HashAndBlind(
      kDomain, Identifiers(0, static_cast<std::size_t>(state.range(0))), Scalar::Random(), 0);
  const int threads = static_cast<int>(state.range(1));
  const Scalar key = Scalar::Random();
  for (auto _ : state) {
    auto blinded = Blind(points, key, threads);
    if (!blinded.ok()) return state.SkipWithError("Blind failed");
    benchmark::DoNotOptimize(blinded->data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// Both parties of a two-party ring, one after the other on this machine: each hashes and
// blinds its own list (no mask with two parties), blinds the other's, then both intersect
// and align. Half of each party's identifiers are shared. Items: identifiers per party.
void BM_TwoPartyRing(benchmark::State& state) {
  const std::size_t count = static_cast<std::size_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const std::vector<std::string> a_ids = Identifiers(0, count);
  const std::vector<std::string> b_ids = Identifiers(count / 2, count);
  for (auto _ : state) {
    const Scalar a_key = Scalar::Random(), b_key = Scalar::Random();
    const std::vector<Point> a_once = HashAndBlind(kDomain, a_ids, a_key, threads);
    const std::vector<Point> b_once = HashAndBlind(kDomain, b_ids, b_key, threads);
    auto a_full = Blind(a_once, b_key, threads);  // At B.
    auto b_full = Blind(b_once, a_key, threads);  // At A.
    if (!a_full.ok() || !b_full.ok()) return state.SkipWithError("Blind failed");
    const std::vector<std::vector<Point>> lists = {*a_full, *b_full};
    auto common = IntersectAll(lists);
    if (!common.ok()) return state.SkipWithError("IntersectAll failed");
    auto a_rows = AlignedRows(*a_full, *common);
    auto b_rows = AlignedRows(*b_full, *common);
    if (!a_rows.ok() || !b_rows.ok() || a_rows->size() != count / 2) {
      return state.SkipWithError("wrong intersection");
    }
    benchmark::DoNotOptimize(b_rows->data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// Wall-clock time: the work runs on the function's own threads.
#define COHORT_PSI_BENCH(fn)                                                               \
  BENCHMARK(fn)                                                                            \
      ->ArgNames({"ids", "threads"})                                                       \
      ->ArgsProduct({{10000, 100000}, {1, 2}})                                             \
      ->UseRealTime()                                                                      \
      ->Unit(benchmark::kMillisecond)

COHORT_PSI_BENCH(BM_HashAndBlind);
COHORT_PSI_BENCH(BM_Blind);
COHORT_PSI_BENCH(BM_TwoPartyRing)->Iterations(1);

}  // namespace
}  // namespace cohort::crypto::psi
