// Seal and open throughput of ChunkSealer / ChunkOpener against raw EVP AES-256-GCM.
//
// Both sides encrypt the same 1 MiB plaintext (and a 64 KiB one, where fixed
// per-chunk costs show more) with the same key and an AAD of the same length, reuse
// one EVP context per thread, and write into a preallocated buffer. What ours adds on
// top of the raw loop: a random nonce from getrandom, the AAD encoding, and the
// argument checks. Target: ours >= 85% of raw bytes/s.

#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "crypto/seal.h"

namespace cohort::crypto {
namespace {

constexpr std::size_t kNonceSize = 12;
constexpr std::size_t kTagSize = 16;

SecretBytes BenchKey() {
  SecretBytes key(32);
  for (std::size_t i = 0; i < key.size(); ++i) key.mutable_span()[i] = static_cast<std::uint8_t>(i);
  return key;
}

std::vector<std::uint8_t> Plaintext(std::size_t size) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i * 31 + 7);
  return bytes;
}

ChunkContext BenchContext() {
  return ChunkContext{.job_id = "benchmark-job",
                      .round = 42,
                      .client_id = "site-a",
                      .chunk_index = 3,
                      .chunk_count = 100,
                      .model_version = 42,
                      .direction = Direction::kToServer};
}

// The same AAD bytes the sealer authenticates, so the raw loop does equal GHASH work.
std::vector<std::uint8_t> BenchAad() {
  std::vector<std::uint8_t> aad;
  if (!AppendChunkAad(BenchContext(), aad).ok()) std::abort();
  return aad;
}

void BM_SealChunk(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  auto sealer = ChunkSealer::Create(BenchKey());
  if (!sealer.ok()) return state.SkipWithError("ChunkSealer::Create failed");
  const ChunkContext context = BenchContext();
  const std::vector<std::uint8_t> plaintext = Plaintext(size);
  std::vector<std::uint8_t> sealed(SealedSize(size));
  for (auto _ : state) {
    if (!sealer->SealChunk(context, plaintext, sealed).ok()) {
      return state.SkipWithError("SealChunk failed");
    }
    benchmark::DoNotOptimize(sealed.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * size);
}

void BM_RawEvpSeal(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  const SecretBytes key = BenchKey();
  const std::vector<std::uint8_t> aad = BenchAad();
  const std::vector<std::uint8_t> plaintext = Plaintext(size);
  std::vector<std::uint8_t> sealed(size + kNonceSize + kTagSize);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nullptr);
  std::uint64_t counter = 0;
  for (auto _ : state) {
    ++counter;  // A counter nonce: the cheapest unique nonce there is.
    std::copy(reinterpret_cast<const std::uint8_t*>(&counter),
              reinterpret_cast<const std::uint8_t*>(&counter) + sizeof(counter), sealed.data());
    int len = 0;
    if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, sealed.data()) != 1 ||
        EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
        EVP_EncryptUpdate(ctx, sealed.data() + kNonceSize, &len, plaintext.data(),
                          static_cast<int>(size)) != 1 ||
        EVP_EncryptFinal_ex(ctx, nullptr, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagSize,
                            sealed.data() + kNonceSize + size) != 1) {
      EVP_CIPHER_CTX_free(ctx);
      return state.SkipWithError("raw EVP seal failed");
    }
    benchmark::DoNotOptimize(sealed.data());
    benchmark::ClobberMemory();
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * size);
}

void BM_OpenChunk(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  auto sealer = ChunkSealer::Create(BenchKey());
  auto opener = ChunkOpener::Create(BenchKey());
  if (!sealer.ok() || !opener.ok()) return state.SkipWithError("Create failed");
  const ChunkContext context = BenchContext();
  std::vector<std::uint8_t> sealed(SealedSize(size));
  if (!sealer->SealChunk(context, Plaintext(size), sealed).ok()) {
    return state.SkipWithError("SealChunk failed");
  }
  std::vector<std::uint8_t> opened(size);
  for (auto _ : state) {
    if (!opener->OpenChunk(context, sealed, opened).ok()) {
      return state.SkipWithError("OpenChunk failed");
    }
    benchmark::DoNotOptimize(opened.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * size);
}

void BM_RawEvpOpen(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  const SecretBytes key = BenchKey();
  auto sealer = ChunkSealer::Create(key);
  if (!sealer.ok()) return state.SkipWithError("Create failed");
  // The same sealed bytes as BM_OpenChunk: our format is nonce || ciphertext || tag.
  std::vector<std::uint8_t> sealed(SealedSize(size));
  if (!sealer->SealChunk(BenchContext(), Plaintext(size), sealed).ok()) {
    return state.SkipWithError("SealChunk failed");
  }
  const std::vector<std::uint8_t> aad = BenchAad();
  std::vector<std::uint8_t> opened(size);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), nullptr);
  for (auto _ : state) {
    int len = 0;
    if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, sealed.data()) != 1 ||
        EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
        EVP_DecryptUpdate(ctx, opened.data(), &len, sealed.data() + kNonceSize,
                          static_cast<int>(size)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagSize,
                            sealed.data() + kNonceSize + size) != 1 ||
        EVP_DecryptFinal_ex(ctx, nullptr, &len) != 1) {
      EVP_CIPHER_CTX_free(ctx);
      return state.SkipWithError("raw EVP open failed");
    }
    benchmark::DoNotOptimize(opened.data());
    benchmark::ClobberMemory();
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * size);
}

// Each thread owns its sealer or context and buffers, as in the server (one per
// stream). Wall-clock time so that the 2-thread rows show aggregate throughput.
#define COHORT_SEAL_BENCH(fn)                                                            \
  BENCHMARK(fn)->Arg(1 << 20)->Arg(64 << 10)->Threads(1)->Threads(2)->UseRealTime()->MinTime(0.5)

COHORT_SEAL_BENCH(BM_SealChunk);
COHORT_SEAL_BENCH(BM_RawEvpSeal);
COHORT_SEAL_BENCH(BM_OpenChunk);
COHORT_SEAL_BENCH(BM_RawEvpOpen);

}  // namespace
}  // namespace cohort::crypto
