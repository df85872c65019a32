#pragma once
// HMAC-SHA256 (RFC 2104, OpenSSL EVP_MAC): the authentication of files the server writes
// and reads back, such as its checkpoint (core/checkpoint.h), so that a file written by
// anyone without the server's key is refused before any of it is used.

#include <cstddef>
#include <span>
#include <string_view>

#include "storage/sha256.h"

struct evp_mac_ctx_st;

namespace cohort::storage {

inline constexpr std::size_t kHmacSha256Bytes = kSha256Bytes;
using HmacSha256Tag = Sha256Digest;

// Incremental: Update any number of times, then Finish once. The key may be any length;
// Cohort's are 32 random or derived bytes.
class HmacSha256 {
 public:
  explicit HmacSha256(std::span<const std::byte> key);
  ~HmacSha256();
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;

  HmacSha256& Update(std::span<const std::byte> bytes);
  HmacSha256& Update(std::string_view bytes);
  HmacSha256Tag Finish();

 private:
  evp_mac_ctx_st* context_;
};

// Constant-time comparison of two tags: a MAC check must not say how many bytes matched.
bool HmacTagsEqual(std::span<const std::byte> a, std::span<const std::byte> b);

}  // namespace cohort::storage
