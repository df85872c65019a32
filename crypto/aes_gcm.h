#pragma once
// Aes256Gcm: AES-256-GCM (NIST SP 800-38D) with a 96-bit nonce and a 128-bit tag,
// through OpenSSL's EVP interface. It is the primitive under ChunkSealer/ChunkOpener
// (crypto/seal.h) and is checked against the NIST CAVP vectors in
// tests/crypto/aes_gcm_test.cc.
//
// This class does not choose nonces: the caller must never use the same nonce twice
// under one key (crypto/seal.h says how Cohort guarantees that). Prefer the sealing
// API; use this class directly only for known-answer tests and benchmarks.
//
// One object holds one key and one EVP cipher context, created once and reused for
// every message (the AES key schedule is computed once). An object is not safe for
// concurrent use: give each thread its own. The key schedule is wiped by OpenSSL when
// the object is destroyed.

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace cohort::crypto {

class Aes256Gcm {
 public:
  static constexpr std::size_t kKeySize = 32;
  static constexpr std::size_t kNonceSize = 12;
  static constexpr std::size_t kTagSize = 16;

  // Fails with InvalidArgument unless `key` is exactly 32 bytes.
  static absl::StatusOr<Aes256Gcm> Create(std::span<const std::uint8_t> key);

  Aes256Gcm(Aes256Gcm&& other) noexcept;
  Aes256Gcm& operator=(Aes256Gcm&& other) noexcept;
  Aes256Gcm(const Aes256Gcm&) = delete;
  Aes256Gcm& operator=(const Aes256Gcm&) = delete;
  ~Aes256Gcm();

  // Encrypts `plaintext` into `ciphertext` (same size) and writes the 16-byte tag.
  // `ciphertext` may be the same memory as `plaintext` (in place) but must not
  // otherwise overlap it.
  absl::Status Encrypt(std::span<const std::uint8_t> nonce, std::span<const std::uint8_t> aad,
                       std::span<const std::uint8_t> plaintext, std::span<std::uint8_t> ciphertext,
                       std::span<std::uint8_t> tag);

  // Decrypts and authenticates. On a tag mismatch it returns DataLoss ("authentication
  // failed") and overwrites `plaintext` with zeros, so unauthenticated bytes never
  // reach the caller. Same aliasing rule as Encrypt.
  absl::Status Decrypt(std::span<const std::uint8_t> nonce, std::span<const std::uint8_t> aad,
                       std::span<const std::uint8_t> ciphertext, std::span<const std::uint8_t> tag,
                       std::span<std::uint8_t> plaintext);

 private:
  explicit Aes256Gcm(EVP_CIPHER_CTX* ctx) : ctx_(ctx) {}
  absl::Status Start(std::span<const std::uint8_t> nonce, std::span<const std::uint8_t> aad,
                     bool encrypt);
  absl::Status Transform(std::span<const std::uint8_t> in, std::span<std::uint8_t> out);

  EVP_CIPHER_CTX* ctx_ = nullptr;
};

}  // namespace cohort::crypto
