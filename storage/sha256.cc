#include "storage/sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>

namespace cohort::storage {
namespace {

// Hashing memory fails only when OpenSSL itself is unusable (no memory, a broken
// provider); carrying on would write or accept unchained logs, so stop here.
void CheckOpenSsl(int rc, const char* call) {
  if (rc == 1) return;
  std::fprintf(stderr, "cohort: %s failed: OpenSSL cannot compute SHA-256\n", call);
  std::abort();
}

}  // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (context_ == nullptr) CheckOpenSsl(0, "EVP_MD_CTX_new");
  CheckOpenSsl(EVP_DigestInit_ex(context_, EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

Sha256::~Sha256() { EVP_MD_CTX_free(context_); }

Sha256& Sha256::Update(std::span<const std::byte> bytes) {
  CheckOpenSsl(EVP_DigestUpdate(context_, bytes.data(), bytes.size()), "EVP_DigestUpdate");
  return *this;
}

Sha256& Sha256::Update(std::string_view bytes) {
  return Update(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

Sha256Digest Sha256::Finish() {
  Sha256Digest digest;
  unsigned int length = 0;
  CheckOpenSsl(EVP_DigestFinal_ex(context_, digest.data(), &length), "EVP_DigestFinal_ex");
  return digest;
}

std::string Sha256::FinishHex() { return Sha256DigestHex(Finish()); }

std::string Sha256DigestHex(const Sha256Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(2 * digest.size(), '\0');
  for (std::size_t i = 0; i < digest.size(); ++i) {
    hex[2 * i] = kHex[digest[i] >> 4];
    hex[2 * i + 1] = kHex[digest[i] & 0x0f];
  }
  return hex;
}

std::string Sha256Hex(std::string_view bytes) { return Sha256().Update(bytes).FinishHex(); }

std::string Sha256Hex(std::span<const std::byte> bytes) {
  return Sha256().Update(bytes).FinishHex();
}

}  // namespace cohort::storage
