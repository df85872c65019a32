#pragma once
// Sealing of model chunks: AES-256-GCM under a direction key from DeriveUpdateKeys
// (crypto/key_agreement.h), with the chunk's place in the protocol bound in as
// associated data, so that a chunk only opens in the exact context it was sealed for.
//
// Sealed chunk, byte layout (SealedSize(n) = n + 28 bytes):
//   offset  size  field
//   0       12    nonce: 96 bits from the operating system's CSPRNG
//   12      n     ciphertext (same length as the plaintext)
//   12+n    16    GCM tag over the AAD below and the ciphertext
//
// Associated data (not transmitted: both sides rebuild it from their ChunkContext),
// all integers big-endian:
//   offset  size  field
//   0       8     magic and version, ASCII "CHRTCHK1"
//   8       1     direction: 0x01 to_server, 0x02 to_client
//   9       8     round
//   17      8     model_version
//   25      4     chunk_index
//   29      4     chunk_count
//   33      2     J = byte length of job_id (1..255)
//   35      J     job_id
//   35+J    2     C = byte length of client_id (1..255)
//   37+J    C     client_id
// Lengths precede both strings, so no two contexts encode to the same bytes. Opening
// under any other context (another round, client, chunk index or count, model
// version, job or direction), with the other direction's key, or after any change to
// the nonce, ciphertext or tag fails with DataLoss ("authentication failed"). The
// receiver still has to notice a chunk that never arrives or arrives twice: track
// which indices of [0, chunk_count) were opened.
//
// Nonce guarantee: every SealChunk draws a fresh random 96-bit nonce (libsodium's
// randombytes_buf, backed by getrandom). Deterministic nonces were rejected because a
// client that crashes and retrains, or a server that re-sends a round, could seal
// different bytes under the same (round, chunk index). With random nonces, NIST SP
// 800-38D (section 8.3) allows 2^32 messages per key for a collision probability
// below 2^-32. Keys are per job, client and direction and come from a fresh X25519
// exchange per session, so a key seals the chunks of one session only. Each
// ChunkSealer refuses to seal more than kMaxChunksPerKey chunks (ResourceExhausted);
// callers must not hold more than one ChunkSealer per key at a time.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/aes_gcm.h"
#include "crypto/secret.h"

namespace cohort::crypto {

enum class Direction : std::uint8_t { kToServer = 0x01, kToClient = 0x02 };

struct ChunkContext {
  std::string job_id;     // 1..255 bytes.
  std::uint64_t round = 0;
  std::string client_id;  // 1..255 bytes: the client that sends or receives the chunk.
  std::uint32_t chunk_index = 0;  // < chunk_count.
  std::uint32_t chunk_count = 0;  // >= 1.
  std::uint64_t model_version = 0;
  Direction direction = Direction::kToServer;
};

inline constexpr std::size_t kSealNonceSize = Aes256Gcm::kNonceSize;  // 12
inline constexpr std::size_t kSealTagSize = Aes256Gcm::kTagSize;      // 16
inline constexpr std::size_t kSealOverhead = kSealNonceSize + kSealTagSize;
inline constexpr std::size_t kMaxChunkContextIdSize = 255;
inline constexpr std::uint64_t kMaxChunksPerKey = std::uint64_t{1} << 32;

constexpr std::size_t SealedSize(std::size_t plaintext_size) {
  return plaintext_size + kSealOverhead;
}
// The plaintext size of a sealed chunk of `sealed_size` bytes; InvalidArgument when
// it is shorter than a nonce and a tag.
absl::StatusOr<std::size_t> OpenedSize(std::size_t sealed_size);

// Appends the associated data of `context` (layout above) to `out`. InvalidArgument
// names the field when the context is malformed.
absl::Status AppendChunkAad(const ChunkContext& context, std::vector<std::uint8_t>& out);

// Seals chunks under one send key. Holds one EVP context, reused for every chunk; not
// safe for concurrent use (one sealer per thread).
class ChunkSealer {
 public:
  // `key`: 32 bytes, the send key of DeriveUpdateKeys. The sealer keeps its own
  // expanded copy; `key` need not outlive it.
  static absl::StatusOr<ChunkSealer> Create(const SecretBytes& key);

  // Seals `plaintext` into `sealed`, which must be exactly SealedSize(plaintext.size())
  // bytes and must not overlap `plaintext`. No allocation after the first call.
  absl::Status SealChunk(const ChunkContext& context, std::span<const std::uint8_t> plaintext,
                         std::span<std::uint8_t> sealed);
  // The same into a new buffer, for callers that do not manage their own.
  absl::StatusOr<std::vector<std::uint8_t>> SealChunk(const ChunkContext& context,
                                                      std::span<const std::uint8_t> plaintext);

  std::uint64_t chunks_sealed() const { return chunks_sealed_; }

 private:
  explicit ChunkSealer(Aes256Gcm aead) : aead_(std::move(aead)) {}

  Aes256Gcm aead_;
  std::vector<std::uint8_t> aad_;  // Reused between chunks.
  std::uint64_t chunks_sealed_ = 0;
};

// Opens chunks under one receive key. Same threading rule as ChunkSealer.
class ChunkOpener {
 public:
  static absl::StatusOr<ChunkOpener> Create(const SecretBytes& key);

  // Opens `sealed` into `plaintext`, which must be exactly OpenedSize(sealed.size())
  // bytes and must not overlap `sealed` (except as OpenChunkInPlace uses it: exactly the
  // ciphertext's bytes). On DataLoss ("authentication failed")
  // `plaintext` is all zeros; the caller adds which job, round, client and chunk it was.
  absl::Status OpenChunk(const ChunkContext& context, std::span<const std::uint8_t> sealed,
                         std::span<std::uint8_t> plaintext);
  absl::StatusOr<std::vector<std::uint8_t>> OpenChunk(const ChunkContext& context,
                                                      std::span<const std::uint8_t> sealed);
  // Opens `sealed` where it lies: the plaintext overwrites the ciphertext, and the
  // returned span (OpenedSize(sealed.size()) bytes, inside `sealed`) is where it is. On
  // DataLoss those bytes are all zeros, as above.
  absl::StatusOr<std::span<std::uint8_t>> OpenChunkInPlace(const ChunkContext& context,
                                                           std::span<std::uint8_t> sealed);

 private:
  explicit ChunkOpener(Aes256Gcm aead) : aead_(std::move(aead)) {}

  Aes256Gcm aead_;
  std::vector<std::uint8_t> aad_;
};

}  // namespace cohort::crypto
