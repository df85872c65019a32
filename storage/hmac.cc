#include "storage/hmac.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstdio>
#include <cstdlib>

namespace cohort::storage {
namespace {

// As with SHA-256: only an unusable OpenSSL fails here, and carrying on would accept or
// write unauthenticated files.
void CheckOpenSsl(int rc, const char* call) {
  if (rc == 1) return;
  std::fprintf(stderr, "cohort: %s failed: OpenSSL cannot compute HMAC-SHA256\n", call);
  std::abort();
}

}  // namespace

HmacSha256::HmacSha256(std::span<const std::byte> key) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) CheckOpenSsl(0, "EVP_MAC_fetch");
  context_ = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);  // the context holds its own reference
  if (context_ == nullptr) CheckOpenSsl(0, "EVP_MAC_CTX_new");
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  CheckOpenSsl(EVP_MAC_init(context_, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params),
               "EVP_MAC_init");
}

HmacSha256::~HmacSha256() { EVP_MAC_CTX_free(context_); }

HmacSha256& HmacSha256::Update(std::span<const std::byte> bytes) {
  CheckOpenSsl(EVP_MAC_update(context_, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()),
               "EVP_MAC_update");
  return *this;
}

HmacSha256& HmacSha256::Update(std::string_view bytes) {
  return Update(std::as_bytes(std::span(bytes.data(), bytes.size())));
}

HmacSha256Tag HmacSha256::Finish() {
  HmacSha256Tag tag;
  size_t length = 0;
  CheckOpenSsl(EVP_MAC_final(context_, tag.data(), &length, tag.size()), "EVP_MAC_final");
  if (length != tag.size()) CheckOpenSsl(0, "EVP_MAC_final (length)");
  return tag;
}

bool HmacTagsEqual(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cohort::storage
