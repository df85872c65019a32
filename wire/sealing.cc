#include "wire/sealing.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cohort::wire {
namespace {

std::span<const std::uint8_t> AsU8(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()};
}
std::span<std::uint8_t> AsU8(std::span<std::byte> bytes) {
  return {reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size()};
}

crypto::Direction SendDirection(crypto::Side side) {
  return side == crypto::Side::kClient ? crypto::Direction::kToServer : crypto::Direction::kToClient;
}
crypto::Direction ReceiveDirection(crypto::Side side) {
  return side == crypto::Side::kClient ? crypto::Direction::kToClient : crypto::Direction::kToServer;
}

// Opens one stream's chunks. ChunkOpener is not thread-safe and the fold opens a stream
// from several threads, so openers are pooled: each call takes one (or makes one from
// the key) and gives it back.
class SealedStreamCodec final : public core::ChunkCodec {
 public:
  SealedStreamCodec(crypto::SecretBytes key, crypto::ChunkContext context)
      : key_(std::move(key)), context_(std::move(context)) {}

  size_t overhead() const override { return crypto::kSealOverhead; }

  absl::Status Open(uint32_t index, std::span<const std::byte> encoded, std::span<std::byte> plain) const override {
    return WithOpener(index, [&](crypto::ChunkOpener& opener, const crypto::ChunkContext& context) {
      return opener.OpenChunk(context, AsU8(encoded), AsU8(plain));
    });
  }

  absl::StatusOr<std::span<std::byte>> OpenInPlace(uint32_t index, std::span<std::byte> encoded) const override {
    std::span<std::byte> plain;
    absl::Status opened = WithOpener(index, [&](crypto::ChunkOpener& opener, const crypto::ChunkContext& context) {
      absl::StatusOr<std::span<uint8_t>> in_place = opener.OpenChunkInPlace(context, AsU8(encoded));
      if (!in_place.ok()) return in_place.status();
      plain = std::as_writable_bytes(*in_place);
      return absl::OkStatus();
    });
    if (!opened.ok()) return opened;
    return plain;
  }

 private:
  // Runs `open` with an idle opener (or a new one) and the context of chunk `index`, and
  // names the chunk in an error.
  template <typename OpenFn>
  absl::Status WithOpener(uint32_t index, OpenFn open) const {
    std::unique_ptr<crypto::ChunkOpener> opener;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        opener = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (opener == nullptr) {
      absl::StatusOr<crypto::ChunkOpener> made = crypto::ChunkOpener::Create(key_);
      if (!made.ok()) return made.status();
      opener = std::make_unique<crypto::ChunkOpener>(std::move(*made));
    }
    crypto::ChunkContext context = context_;
    context.chunk_index = index;
    absl::Status opened = open(*opener, context);
    {
      std::lock_guard lock(mu_);
      idle_.push_back(std::move(opener));
    }
    if (!opened.ok()) {
      return absl::Status(opened.code(),
                          absl::StrCat("chunk ", index, " of ", context_.chunk_count, ": ", opened.message()));
    }
    return absl::OkStatus();
  }

  crypto::SecretBytes key_;
  crypto::ChunkContext context_;
  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<crypto::ChunkOpener>> idle_;
};

}  // namespace

SealedSession::SealedSession(crypto::Side side, std::string job_id, std::string client_id,
                             crypto::ChunkSealer sealer, crypto::SecretBytes receive_key)
    : side_(side),
      job_id_(std::move(job_id)),
      client_id_(std::move(client_id)),
      sealer_(std::move(sealer)),
      receive_key_(std::move(receive_key)) {}

absl::StatusOr<std::shared_ptr<SealedSession>> SealedSession::Agree(const crypto::X25519KeyPair& own,
                                                                    std::string_view peer_public_key,
                                                                    crypto::Side side, std::string job_id,
                                                                    std::string client_id) {
  if (peer_public_key.size() != kSessionPublicKeySize) {
    return absl::InvalidArgumentError(absl::StrCat(
        side == crypto::Side::kServer ? "client_public_key" : "server_public_key", ": expected a ",
        kSessionPublicKeySize, "-byte X25519 public key, got ", peer_public_key.size(),
        " bytes; every model stream is sealed under keys agreed from it"));
  }
  crypto::X25519PublicKey peer;
  std::copy_n(reinterpret_cast<const std::uint8_t*>(peer_public_key.data()), peer.size(), peer.begin());
  absl::StatusOr<crypto::UpdateKeys> keys = crypto::DeriveUpdateKeys(own, peer, side, {job_id, client_id});
  if (!keys.ok()) return keys.status();
  absl::StatusOr<crypto::ChunkSealer> sealer = crypto::ChunkSealer::Create(keys->send_key);
  if (!sealer.ok()) return sealer.status();
  // keys->send_key is wiped when `keys` goes out of scope: the sealer holds its own schedule.
  return std::shared_ptr<SealedSession>(new SealedSession(side, std::move(job_id), std::move(client_id),
                                                          std::move(*sealer), std::move(keys->receive_key)));
}

absl::Status SealedSession::SealChunk(uint64_t round, uint64_t model_version, uint32_t index, uint32_t count,
                                      std::span<const std::byte> plaintext, std::span<std::byte> sealed) {
  crypto::ChunkContext context{job_id_, round, client_id_, index, count, model_version, SendDirection(side_)};
  std::lock_guard lock(seal_mu_);
  return sealer_.SealChunk(context, AsU8(plaintext), AsU8(sealed));
}

absl::Status SealedSession::SealChunk(uint64_t round, uint64_t model_version, uint32_t index, uint32_t count,
                                      std::span<const std::byte> plaintext, std::string* sealed) {
  // resize() keeps the capacity of a reused message's field: no allocation per chunk.
  sealed->resize(crypto::SealedSize(plaintext.size()));
  return SealChunk(round, model_version, index, count, plaintext,
                   std::as_writable_bytes(std::span(sealed->data(), sealed->size())));
}

std::shared_ptr<const core::ChunkCodec> SealedSession::StreamOpener(uint64_t round, uint64_t model_version,
                                                                    uint32_t count) const {
  crypto::ChunkContext context{job_id_, round, client_id_, 0, count, model_version, ReceiveDirection(side_)};
  return std::make_shared<const SealedStreamCodec>(receive_key_.Clone(), std::move(context));
}

}  // namespace cohort::wire
