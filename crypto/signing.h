#pragma once
// Ed25519 signatures (RFC 8032) through libsodium: key generation, signing,
// verification, and key files.
//
// Key files are one line of lowercase hex followed by "\n":
//   private key file: the 32-byte Ed25519 seed (64 hex characters), mode 0600.
//   public key file:  the 32-byte Ed25519 public key (64 hex characters).
// Readers accept surrounding whitespace and either hex case. A private key file
// whose mode lets group or others read it is refused, as OpenSSH does, because a
// key that others could have copied no longer proves who signed.

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::crypto {

inline constexpr std::size_t kSigningSeedBytes = 32;
inline constexpr std::size_t kSigningPublicKeyBytes = 32;
inline constexpr std::size_t kSignatureBytes = 64;

using Signature = std::array<std::uint8_t, kSignatureBytes>;

// Signature <-> 128 lowercase hex characters.
std::string SignatureToHex(const Signature& signature);
absl::StatusOr<Signature> SignatureFromHex(std::string_view hex);

// An Ed25519 public key. Cheap to copy; not secret.
class SigningPublicKey {
 public:
  static absl::StatusOr<SigningPublicKey> FromBytes(std::span<const std::uint8_t> bytes);
  // 64 hex characters, either case.
  static absl::StatusOr<SigningPublicKey> FromHex(std::string_view hex);

  // True only if `signature` is a valid Ed25519 signature of exactly `message`
  // under this key.
  bool Verify(std::span<const std::uint8_t> message, const Signature& signature) const;
  bool Verify(std::string_view message, const Signature& signature) const;

  std::string ToHex() const;
  const std::array<std::uint8_t, kSigningPublicKeyBytes>& bytes() const { return bytes_; }

  friend bool operator==(const SigningPublicKey&, const SigningPublicKey&) = default;

 private:
  explicit SigningPublicKey(const std::array<std::uint8_t, kSigningPublicKeyBytes>& bytes)
      : bytes_(bytes) {}
  friend class SigningKey;

  std::array<std::uint8_t, kSigningPublicKeyBytes> bytes_{};
};

// An Ed25519 private key with its public key. Move-only: the secret bytes live in
// exactly one object and are wiped with sodium_memzero when it is destroyed or
// moved from.
class SigningKey {
 public:
  // A fresh key from the operating system's CSPRNG.
  static SigningKey Generate();
  // The key derived from a 32-byte RFC 8032 seed (the "private key" of the RFC).
  static absl::StatusOr<SigningKey> FromSeed(std::span<const std::uint8_t> seed);

  SigningKey(SigningKey&& other) noexcept;
  SigningKey& operator=(SigningKey&& other) noexcept;
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;
  ~SigningKey();

  Signature Sign(std::span<const std::uint8_t> message) const;
  Signature Sign(std::string_view message) const;

  const SigningPublicKey& public_key() const { return public_key_; }

 private:
  SigningKey() = default;
  void Wipe();
  friend absl::Status WriteSigningKeyFile(const std::filesystem::path& path, const SigningKey& key);

  // libsodium's secret key layout: seed (32 bytes) || public key (32 bytes).
  std::array<std::uint8_t, 64> secret_{};
  SigningPublicKey public_key_{std::array<std::uint8_t, kSigningPublicKeyBytes>{}};
};

// Writes the private key file with mode 0600: the seed goes to a temporary file
// in the same directory, is fsynced, and is then linked to `path`, so the file
// appears whole or not at all. Refuses to replace an existing file
// (AlreadyExists), because overwriting a key silently orphans everything it
// signed.
absl::Status WriteSigningKeyFile(const std::filesystem::path& path, const SigningKey& key);
absl::StatusOr<SigningKey> ReadSigningKeyFile(const std::filesystem::path& path);

// Writes the public key file (mode 0644) the same atomic, no-overwrite way.
absl::Status WritePublicKeyFile(const std::filesystem::path& path, const SigningPublicKey& key);
absl::StatusOr<SigningPublicKey> ReadPublicKeyFile(const std::filesystem::path& path);

}  // namespace cohort::crypto
