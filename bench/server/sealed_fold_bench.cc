// What keeping spooled updates sealed at rest costs the fold: StreamingFedAvg::Flush of 8
// updates of 25M float32 parameters (100 MB each, 1 MiB chunks) from spool files in the
// page cache, sealed (as the server spools them now) and plaintext (as before), beside
// the two floors a sealed fold cannot go under, measured in the same run:
//
//   BM_Flush/sealed:S/threads:T   8 spooled updates -> Add x8 -> Flush (fold_batch 8), the
//                                 library's code; steady state (one untimed batch first,
//                                 which allocates the fold's windows)
//   BM_PreadOpen/threads:T        Flush's reads and opens alone: the same windows read
//                                 from the same sealed files and opened, no fold
//   BM_RawEvpOpen/threads:T       raw OpenSSL EVP AES-256-GCM decryption of 800 MB in
//                                 1 MiB chunks from memory, one EVP context per thread
//
// Rates are bytes of updates (plaintext) per second. Spool files are hard links to one
// set of files written once, so each iteration's Flush can delete its links.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/server/bench_support.h"
#include "core/chunking.h"
#include "core/fedavg.h"
#include "crypto/key_agreement.h"
#include "wire/sealing.h"

namespace cohort::bench {
namespace {

constexpr size_t kParams = 25'000'000;
constexpr size_t kUpdateBytes = kParams * sizeof(float);
constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr int kUpdates = 8;

core::Manifest Model() { return core::Manifest({{"weights", core::DType::kFloat32, {static_cast<int64_t>(kParams)}}}); }

// Eight sealed and eight plaintext spool files, written once through UpdateReceiver.
class Spools {
 public:
  Spools() : dir_("cohort-sealed-fold-bench") {
    const crypto::X25519KeyPair client = crypto::GenerateX25519KeyPair();
    const crypto::X25519KeyPair server = crypto::GenerateX25519KeyPair();
    auto key = [](const crypto::X25519PublicKey& k) { return std::string(reinterpret_cast<const char*>(k.data()), 32); };
    auto c = wire::SealedSession::Agree(client, key(server.public_key), crypto::Side::kClient, "bench", "site");
    auto s = wire::SealedSession::Agree(server, key(client.public_key), crypto::Side::kServer, "bench", "site");
    if (!c.ok() || !s.ok()) std::abort();
    server_ = *s;
    const uint32_t count = core::ChunkCount(kUpdateBytes, kChunkBytes);
    codec_ = server_->StreamOpener(1, 0, count);
    core::ParameterSet update(Model());
    for (int k = 0; k < kUpdates; ++k) {
      std::span<float> v = update.floats();
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i + k) % 1024) * 1e-6f;
      for (bool sealed : {false, true}) {
        auto receiver = core::UpdateReceiver::Open(Model(), count, kChunkBytes, Master(sealed, k), {},
                                                   sealed ? codec_ : nullptr);
        if (!receiver.ok()) std::abort();
        std::string chunk;
        for (uint32_t i = 0; i < count; ++i) {
          std::span<const std::byte> piece = core::ChunkOf(update.bytes(), i, kChunkBytes);
          if (sealed) {
            if (!(*c)->SealChunk(1, 0, i, count, piece, &chunk).ok()) std::abort();
            piece = std::as_bytes(std::span(chunk.data(), chunk.size()));
          }
          if (!receiver->AddChunk(i, count, piece).ok()) std::abort();
        }
        if (!receiver->Finish(1, "site").ok()) std::abort();
      }
    }
  }

  std::filesystem::path Master(bool sealed, int k) const {
    return dir_.path() / ((sealed ? "sealed-" : "plain-") + std::to_string(k));
  }
  // Fresh links to the eight files, as a round's accepted updates.
  std::vector<core::SpooledUpdate> Batch(bool sealed) {
    std::vector<core::SpooledUpdate> updates;
    for (int k = 0; k < kUpdates; ++k) {
      const std::filesystem::path link = dir_.path() / ("link-" + std::to_string(next_++));
      std::filesystem::create_hard_link(Master(sealed, k), link);
      updates.push_back({link, 1.0 + k, 0.0, "site", kChunkBytes, sealed ? codec_ : nullptr});
    }
    return updates;
  }
  const core::ChunkCodec& codec() const { return *codec_; }

 private:
  TempDir dir_;
  std::shared_ptr<wire::SealedSession> server_;
  std::shared_ptr<const core::ChunkCodec> codec_;
  uint64_t next_ = 0;
};

Spools& TheSpools() {
  static Spools spools;
  return spools;
}

void BM_Flush(benchmark::State& state) {
  const bool sealed = state.range(0) != 0;
  const int threads = static_cast<int>(state.range(1));
  Spools& spools = TheSpools();
  core::StreamingFedAvg fedavg(Model(), threads, /*fold_batch=*/kUpdates);
  auto fold = [&](std::vector<core::SpooledUpdate> updates) {
    for (core::SpooledUpdate& u : updates) {
      if (!fedavg.Add(std::move(u)).ok()) return false;
    }
    return fedavg.Flush().ok();
  };
  if (!fold(spools.Batch(sealed))) return state.SkipWithError("Flush failed");
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<core::SpooledUpdate> updates = spools.Batch(sealed);
    state.ResumeTiming();
    if (!fold(std::move(updates))) return state.SkipWithError("Flush failed");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kUpdates * static_cast<int64_t>(kUpdateBytes));
}

// Flush's reads and opens with its own window size (2 MiB: two chunks) and the same
// split of windows over threads, without the fold.
void BM_PreadOpen(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  Spools& spools = TheSpools();
  const core::ChunkCodec& codec = spools.codec();
  const size_t stride = kChunkBytes + codec.overhead();
  const size_t chunks = core::ChunkCount(kUpdateBytes, kChunkBytes);
  std::vector<int> fds;
  for (int k = 0; k < kUpdates; ++k) fds.push_back(::open(spools.Master(true, k).c_str(), O_RDONLY | O_CLOEXEC));
  std::vector<std::vector<std::byte>> sealed(static_cast<size_t>(threads), std::vector<std::byte>(2 * stride));
  std::vector<std::vector<std::byte>> plain(static_cast<size_t>(threads), std::vector<std::byte>(2 * kChunkBytes));
  for (auto _ : state) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (size_t first = static_cast<size_t>(t) * 2; first < chunks; first += static_cast<size_t>(threads) * 2) {
          const size_t n = std::min<size_t>(2, chunks - first);
          for (int k = 0; k < kUpdates; ++k) {
            const size_t last_plain = std::min(kChunkBytes, kUpdateBytes - (first + n - 1) * kChunkBytes);
            const size_t bytes = (n - 1) * stride + last_plain + codec.overhead();
            if (::pread(fds[k], sealed[t].data(), bytes, static_cast<off_t>(first * stride)) !=
                static_cast<ssize_t>(bytes)) {
              std::abort();
            }
            for (size_t c = 0; c < n; ++c) {
              const size_t size = c + 1 == n ? last_plain : kChunkBytes;
              if (!codec.Open(static_cast<uint32_t>(first + c), std::span(sealed[t]).subspan(c * stride, size + codec.overhead()),
                              std::span(plain[t]).subspan(c * kChunkBytes, size))
                       .ok()) {
                std::abort();
              }
            }
          }
        }
      });
    }
    for (std::thread& w : workers) w.join();
  }
  for (int fd : fds) ::close(fd);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kUpdates * static_cast<int64_t>(kUpdateBytes));
}

// Raw EVP AES-256-GCM decryption of 8 x 100 MB in 1 MiB chunks held in memory.
void BM_RawEvpOpen(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  static std::vector<std::vector<unsigned char>> chunks;
  static std::vector<std::array<unsigned char, 16>> tags;
  static unsigned char key[32], nonce[12], aad[60];
  const size_t count = kUpdates * core::ChunkCount(kUpdateBytes, kChunkBytes);
  if (chunks.empty()) {
    RAND_bytes(key, sizeof(key));
    RAND_bytes(nonce, sizeof(nonce));
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    std::vector<unsigned char> plain(kChunkBytes, 0x3c);
    for (size_t i = 0; i < count; ++i) {
      std::vector<unsigned char> out(kChunkBytes);
      int len = 0;
      std::array<unsigned char, 16> tag{};
      EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, nonce);
      EVP_EncryptUpdate(ctx, nullptr, &len, aad, sizeof(aad));
      EVP_EncryptUpdate(ctx, out.data(), &len, plain.data(), static_cast<int>(plain.size()));
      EVP_EncryptFinal_ex(ctx, out.data() + len, &len);
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag.data());
      chunks.push_back(std::move(out));
      tags.push_back(tag);
    }
    EVP_CIPHER_CTX_free(ctx);
  }
  std::vector<std::vector<unsigned char>> out(static_cast<size_t>(threads), std::vector<unsigned char>(kChunkBytes));
  for (auto _ : state) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
        EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, nullptr);
        for (size_t i = static_cast<size_t>(t); i < count; i += static_cast<size_t>(threads)) {
          int len = 0;
          EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce);
          EVP_DecryptUpdate(ctx, nullptr, &len, aad, sizeof(aad));
          EVP_DecryptUpdate(ctx, out[t].data(), &len, chunks[i].data(), static_cast<int>(chunks[i].size()));
          EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tags[i].data());
          if (EVP_DecryptFinal_ex(ctx, out[t].data() + len, &len) != 1) std::abort();
        }
        EVP_CIPHER_CTX_free(ctx);
      });
    }
    for (std::thread& w : workers) w.join();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(count * kChunkBytes));
}

BENCHMARK(BM_Flush)->ArgNames({"sealed", "threads"})->ArgsProduct({{0, 1}, {1, 2}})->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PreadOpen)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RawEvpOpen)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace cohort::bench
