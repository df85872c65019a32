#pragma once
// Key agreement for update sealing: X25519 (RFC 7748, libsodium) followed by
// HKDF-SHA256 (RFC 5869, OpenSSL) into two AES-256-GCM keys, one per direction.
//
// Key schedule (docs/security.md tells the long story):
//   shared    = X25519(own secret key, peer public key)        32 bytes, must not be 0
//   salt      = "cohort/update-keys/v1"                        21 ASCII bytes
//   info(dir) = label(dir)                                     see below
//               || u16 len(job_id)    || job_id                big-endian length
//               || u16 len(client_id) || client_id
//               || client public key (32) || server public key (32)
//   key(dir)  = HKDF-SHA256(ikm = shared, salt, info(dir), L = 32)
//   label(client->server) = "cohort update key: client to server"
//   label(server->client) = "cohort update key: server to client"
//
// The client's send key is key(client->server), which is the server's receive key,
// and the other way around. Because the job, the client's name and both public keys
// are inside `info`, a key agreed for one job, client or key pair is useless for any
// other, and a peer substituting its own public key ends up with different keys.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret.h"

namespace cohort::crypto {

inline constexpr std::size_t kX25519KeySize = 32;
inline constexpr std::size_t kUpdateKeySize = 32;  // AES-256-GCM.
// Bounds on the strings bound into the key schedule (they travel as u16 lengths, and
// OpenSSL caps HKDF's info at 1024 bytes).
inline constexpr std::size_t kMaxKeyContextIdSize = 255;

using X25519PublicKey = std::array<std::uint8_t, kX25519KeySize>;

struct X25519KeyPair {
  X25519PublicKey public_key{};
  SecretBytes secret_key;  // 32 bytes.
};

// A fresh key pair from the operating system's CSPRNG. Generate one per job and
// session; a key pair is never written to disk by this component.
X25519KeyPair GenerateX25519KeyPair();

// The key pair whose secret key is `secret_key` (32 bytes; clamped as RFC 7748 says).
absl::StatusOr<X25519KeyPair> X25519KeyPairFromSecret(std::span<const std::uint8_t> secret_key);

// The raw X25519 function of RFC 7748 section 5: `scalar` times the point with
// u-coordinate `u`. Fails with InvalidArgument when an input is not 32 bytes and with
// FailedPrecondition when the result is all zeros, which happens exactly when `u` is a
// low-order point (a peer trying to force a known shared secret).
absl::StatusOr<SecretBytes> X25519(std::span<const std::uint8_t> scalar,
                                   std::span<const std::uint8_t> u);

enum class Side { kClient, kServer };

// What the keys are bound to besides the two public keys. Both sides must give the
// same values. Each string: 1 to 255 bytes.
struct UpdateKeyContext {
  std::string_view job_id;
  std::string_view client_id;
};

struct UpdateKeys {
  SecretBytes send_key;     // Seals what this side sends.
  SecretBytes receive_key;  // Opens what this side receives.
};

// Derives this side's two keys from its key pair and the peer's public key.
// Fails with FailedPrecondition ("low-order point") when the shared secret is all
// zeros, and with InvalidArgument when a context string is empty or too long.
absl::StatusOr<UpdateKeys> DeriveUpdateKeys(const X25519KeyPair& own,
                                            const X25519PublicKey& peer_public, Side side,
                                            const UpdateKeyContext& context);

}  // namespace cohort::crypto
