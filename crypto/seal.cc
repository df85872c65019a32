#include "crypto/seal.h"

#include <sodium.h>

#include "absl/strings/str_cat.h"
#include "crypto/sodium_util.h"

namespace cohort::crypto {
namespace {

constexpr std::string_view kAadMagic = "CHRTCHK1";

void AppendBigEndian(std::vector<std::uint8_t>& out, std::uint64_t value, int bytes) {
  for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(value >> shift));
  }
}

absl::Status CheckId(absl::string_view field, std::string_view value) {
  if (!value.empty() && value.size() <= kMaxChunkContextIdSize) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("chunk context ", field, ": expected 1 to ",
                                                 kMaxChunkContextIdSize, " bytes, got ",
                                                 value.size()));
}

absl::Status CheckBufferSize(absl::string_view what, std::size_t got, std::size_t want) {
  if (got == want) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": expected ", want, " bytes, got ", got));
}

}  // namespace

absl::StatusOr<std::size_t> OpenedSize(std::size_t sealed_size) {
  if (sealed_size >= kSealOverhead) return sealed_size - kSealOverhead;
  return absl::InvalidArgumentError(
      absl::StrCat("sealed chunk: expected at least ", kSealOverhead,
                   " bytes (12-byte nonce and 16-byte tag), got ", sealed_size));
}

absl::Status AppendChunkAad(const ChunkContext& context, std::vector<std::uint8_t>& out) {
  if (absl::Status s = CheckId("job_id", context.job_id); !s.ok()) return s;
  if (absl::Status s = CheckId("client_id", context.client_id); !s.ok()) return s;
  if (context.chunk_count == 0 || context.chunk_index >= context.chunk_count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk context: expected chunk_index < chunk_count and chunk_count >= 1, got chunk ",
        context.chunk_index, " of ", context.chunk_count));
  }
  if (context.direction != Direction::kToServer && context.direction != Direction::kToClient) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk context direction: expected to_server (1) or to_client (2), got ",
                     static_cast<int>(context.direction)));
  }
  out.insert(out.end(), kAadMagic.begin(), kAadMagic.end());
  out.push_back(static_cast<std::uint8_t>(context.direction));
  AppendBigEndian(out, context.round, 8);
  AppendBigEndian(out, context.model_version, 8);
  AppendBigEndian(out, context.chunk_index, 4);
  AppendBigEndian(out, context.chunk_count, 4);
  AppendBigEndian(out, context.job_id.size(), 2);
  out.insert(out.end(), context.job_id.begin(), context.job_id.end());
  AppendBigEndian(out, context.client_id.size(), 2);
  out.insert(out.end(), context.client_id.begin(), context.client_id.end());
  return absl::OkStatus();
}

absl::StatusOr<ChunkSealer> ChunkSealer::Create(const SecretBytes& key) {
  internal::EnsureSodiumInitialized();
  absl::StatusOr<Aes256Gcm> aead = Aes256Gcm::Create(key.span());
  if (!aead.ok()) return aead.status();
  return ChunkSealer(std::move(*aead));
}

absl::Status ChunkSealer::SealChunk(const ChunkContext& context,
                                    std::span<const std::uint8_t> plaintext,
                                    std::span<std::uint8_t> sealed) {
  if (absl::Status s =
          CheckBufferSize("sealed chunk buffer", sealed.size(), SealedSize(plaintext.size()));
      !s.ok()) {
    return s;
  }
  if (chunks_sealed_ >= kMaxChunksPerKey) {
    return absl::ResourceExhaustedError(
        absl::StrCat("chunk sealer: this key has sealed ", chunks_sealed_,
                     " chunks, the most random 96-bit nonces allow; agree a new key"));
  }
  aad_.clear();
  if (absl::Status s = AppendChunkAad(context, aad_); !s.ok()) return s;

  const std::span<std::uint8_t> nonce = sealed.first(kSealNonceSize);
  const std::span<std::uint8_t> ciphertext = sealed.subspan(kSealNonceSize, plaintext.size());
  const std::span<std::uint8_t> tag = sealed.last(kSealTagSize);
  randombytes_buf(nonce.data(), nonce.size());
  // Counted before encrypting: a nonce that was drawn counts against the limit even if
  // the encryption then fails.
  ++chunks_sealed_;
  return aead_.Encrypt(nonce, aad_, plaintext, ciphertext, tag);
}

absl::StatusOr<std::vector<std::uint8_t>> ChunkSealer::SealChunk(
    const ChunkContext& context, std::span<const std::uint8_t> plaintext) {
  std::vector<std::uint8_t> sealed(SealedSize(plaintext.size()));
  if (absl::Status s = SealChunk(context, plaintext, sealed); !s.ok()) return s;
  return sealed;
}

absl::StatusOr<ChunkOpener> ChunkOpener::Create(const SecretBytes& key) {
  absl::StatusOr<Aes256Gcm> aead = Aes256Gcm::Create(key.span());
  if (!aead.ok()) return aead.status();
  return ChunkOpener(std::move(*aead));
}

absl::Status ChunkOpener::OpenChunk(const ChunkContext& context,
                                    std::span<const std::uint8_t> sealed,
                                    std::span<std::uint8_t> plaintext) {
  absl::StatusOr<std::size_t> opened_size = OpenedSize(sealed.size());
  if (!opened_size.ok()) return opened_size.status();
  if (absl::Status s = CheckBufferSize("opened chunk buffer", plaintext.size(), *opened_size);
      !s.ok()) {
    return s;
  }
  aad_.clear();
  if (absl::Status s = AppendChunkAad(context, aad_); !s.ok()) return s;
  absl::Status status =
      aead_.Decrypt(sealed.first(kSealNonceSize), aad_, sealed.subspan(kSealNonceSize, *opened_size),
                    sealed.last(kSealTagSize), plaintext);
  if (absl::IsDataLoss(status)) {
    return absl::DataLossError(absl::StrCat(
        "sealed chunk of ", sealed.size(),
        " bytes: authentication failed (altered, truncated, or sealed for another job, round, "
        "client, chunk position, model version, direction or key)"));
  }
  return status;
}

absl::StatusOr<std::span<std::uint8_t>> ChunkOpener::OpenChunkInPlace(const ChunkContext& context,
                                                                      std::span<std::uint8_t> sealed) {
  absl::StatusOr<std::size_t> opened_size = OpenedSize(sealed.size());
  if (!opened_size.ok()) return opened_size.status();
  const std::span<std::uint8_t> ciphertext = sealed.subspan(kSealNonceSize, *opened_size);
  // Decrypting onto the ciphertext itself is the one overlap AES-GCM allows.
  if (absl::Status s = OpenChunk(context, sealed, ciphertext); !s.ok()) return s;
  return ciphertext;
}

absl::StatusOr<std::vector<std::uint8_t>> ChunkOpener::OpenChunk(
    const ChunkContext& context, std::span<const std::uint8_t> sealed) {
  absl::StatusOr<std::size_t> opened_size = OpenedSize(sealed.size());
  if (!opened_size.ok()) return opened_size.status();
  std::vector<std::uint8_t> plaintext(*opened_size);
  if (absl::Status s = OpenChunk(context, sealed, plaintext); !s.ok()) return s;
  return plaintext;
}

}  // namespace cohort::crypto
