#pragma once
// HKDF with SHA-256 (RFC 5869) through OpenSSL 3's EVP_KDF "HKDF". Used by the key
// schedule in crypto/key_agreement.h; checked against RFC 5869's vectors in
// tests/crypto/hkdf_test.cc.

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "crypto/secret.h"

namespace cohort::crypto {

inline constexpr std::size_t kHkdfSha256HashSize = 32;
// RFC 5869: L <= 255 * HashLen.
inline constexpr std::size_t kHkdfSha256MaxOutput = 255 * kHkdfSha256HashSize;

// Extract then expand: `length` bytes of output keying material. An empty salt means
// HashLen zero bytes, as RFC 5869 specifies. Fails with InvalidArgument on an empty
// `ikm` or a `length` outside [1, 8160].
absl::StatusOr<SecretBytes> HkdfSha256(std::span<const std::uint8_t> ikm,
                                       std::span<const std::uint8_t> salt,
                                       std::span<const std::uint8_t> info, std::size_t length);

// The two halves, for callers that derive several keys from one secret and for the
// known-answer tests: Extract returns the 32-byte pseudorandom key (PRK); Expand
// stretches a PRK of at least 32 bytes into `length` bytes bound to `info`.
absl::StatusOr<SecretBytes> HkdfSha256Extract(std::span<const std::uint8_t> ikm,
                                              std::span<const std::uint8_t> salt);
absl::StatusOr<SecretBytes> HkdfSha256Expand(std::span<const std::uint8_t> prk,
                                             std::span<const std::uint8_t> info,
                                             std::size_t length);

}  // namespace cohort::crypto
