#pragma once
// Sealed model streams: what a client and the server do with the keys they agree at Join
// (docs/security.md, "Sealed model streams"). Both ends use this one implementation, so
// they seal and open alike.
//
// Key agreement. The client sends a fresh X25519 public key in JoinRequest (a new one at
// every Join); the server answers with the public key of its own pair (one pair per job
// run) in JoinReply. Each side calls SealedSession::Agree with its pair and the peer's
// key; crypto::DeriveUpdateKeys binds the job, the client's name and both public keys into
// one key per direction.
//
// Streams. Every chunk of a model stream travels sealed under the sender's key
// (crypto/seal.h: nonce || ciphertext || tag, 28 bytes more than the plaintext, which is
// the `chunk_bytes`-sized piece of core/chunking.h), with the crypto::ChunkContext
//   job_id, client_id   the session's (the server's job name; the client's name)
//   round               the round of the task
//   model_version       download: the global model's version; upload: the version the
//                       update was trained on (UpdateHeader.base_model_version)
//   chunk_index/count   the chunk's place in its stream
//   direction           to_client (global model), to_server (update)
// so a chunk opens only in the stream and at the place it was sealed for.

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/chunking.h"
#include "crypto/key_agreement.h"
#include "crypto/seal.h"
#include "crypto/secret.h"

namespace cohort::wire {

inline constexpr size_t kSessionPublicKeySize = crypto::kX25519KeySize;

// One side's keys for one session: one client, one job run, from one Join to the next.
// Destroying it wipes both keys (the send key lives inside the sealer's cipher context,
// which OpenSSL clears; the receive key is a crypto::SecretBytes).
class SealedSession {
 public:
  // `peer_public_key`: the other side's X25519 public key as it came over the wire.
  // InvalidArgument when it is not 32 bytes; FailedPrecondition when it is a low-order
  // point; InvalidArgument when `job_id` or `client_id` is empty or over 255 bytes.
  static absl::StatusOr<std::shared_ptr<SealedSession>> Agree(const crypto::X25519KeyPair& own,
                                                              std::string_view peer_public_key, crypto::Side side,
                                                              std::string job_id, std::string client_id);

  SealedSession(const SealedSession&) = delete;
  SealedSession& operator=(const SealedSession&) = delete;

  // Seals chunk `index` of `count` of a stream this side sends (to the server on a
  // client, to the client on the server) into `sealed`, which must be exactly
  // crypto::SealedSize(plaintext.size()) bytes. Thread-safe: the session's one sealer
  // (one per key, as crypto/seal.h asks) is taken under a lock.
  absl::Status SealChunk(uint64_t round, uint64_t model_version, uint32_t index, uint32_t count,
                         std::span<const std::byte> plaintext, std::span<std::byte> sealed);
  // The same into `*sealed` (a protobuf bytes field), resized to fit.
  absl::Status SealChunk(uint64_t round, uint64_t model_version, uint32_t index, uint32_t count,
                         std::span<const std::byte> plaintext, std::string* sealed);

  // Opens the chunks of one stream this side receives: the global model of `round` and
  // `model_version` (client), or the update for `round` trained on `model_version`
  // (server), in `count` chunks. It holds its own copy of the receive key, wiped when the
  // codec is destroyed, so an update spooled before a re-join still opens at the fold.
  std::shared_ptr<const core::ChunkCodec> StreamOpener(uint64_t round, uint64_t model_version,
                                                       uint32_t count) const;

  const std::string& job_id() const { return job_id_; }
  const std::string& client_id() const { return client_id_; }

 private:
  SealedSession(crypto::Side side, std::string job_id, std::string client_id, crypto::ChunkSealer sealer,
                crypto::SecretBytes receive_key);

  crypto::Side side_;
  std::string job_id_;
  std::string client_id_;
  std::mutex seal_mu_;
  crypto::ChunkSealer sealer_;
  crypto::SecretBytes receive_key_;
};

}  // namespace cohort::wire
