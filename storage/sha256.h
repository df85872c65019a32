#pragma once
// The one SHA-256 of Cohort (OpenSSL EVP): hash chains of the audit log and the privacy
// ledger, model digests in the audit log, fingerprints. Hex output is lowercase, as
// `sha256sum` prints it.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace cohort::storage {

inline constexpr std::size_t kSha256Bytes = 32;
using Sha256Digest = std::array<std::uint8_t, kSha256Bytes>;

// Incremental: Update any number of times, then Finish once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Sha256& Update(std::span<const std::byte> bytes);
  Sha256& Update(std::string_view bytes);
  Sha256Digest Finish();
  std::string FinishHex();

 private:
  evp_md_ctx_st* context_;
};

// Lowercase hex of `digest` (64 characters).
std::string Sha256DigestHex(const Sha256Digest& digest);
// Lowercase hex SHA-256 of `bytes`.
std::string Sha256Hex(std::string_view bytes);
std::string Sha256Hex(std::span<const std::byte> bytes);

}  // namespace cohort::storage
