#include "crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "crypto/openssl_util.h"

namespace cohort::crypto {
namespace {

// OSSL_PARAM wants a mutable pointer even for inputs it only reads.
OSSL_PARAM OctetParam(const char* key, std::span<const std::uint8_t> bytes) {
  return OSSL_PARAM_construct_octet_string(
      key, const_cast<std::uint8_t*>(bytes.data()), bytes.size());
}

// One EVP_KDF "HKDF" call in `mode` (EVP_KDF_HKDF_MODE_*). Empty salt and info are
// left out of the parameters: OpenSSL then uses RFC 5869's defaults (HashLen zero
// bytes, empty info).
absl::StatusOr<SecretBytes> RunHkdf(int mode, std::span<const std::uint8_t> key,
                                    std::span<const std::uint8_t> salt,
                                    std::span<const std::uint8_t> info, std::size_t length) {
  internal::KdfPtr kdf(EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr));
  if (kdf == nullptr) return internal::OpenSslError("EVP_KDF_fetch(HKDF)");
  internal::KdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
  if (ctx == nullptr) return internal::OpenSslError("EVP_KDF_CTX_new(HKDF)");

  char digest[] = "SHA256";
  OSSL_PARAM params[6];
  OSSL_PARAM* p = params;
  *p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
  *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  *p++ = OctetParam(OSSL_KDF_PARAM_KEY, key);
  if (!salt.empty()) *p++ = OctetParam(OSSL_KDF_PARAM_SALT, salt);
  if (!info.empty()) *p++ = OctetParam(OSSL_KDF_PARAM_INFO, info);
  *p = OSSL_PARAM_construct_end();

  SecretBytes out(length);
  if (EVP_KDF_derive(ctx.get(), out.mutable_span().data(), length, params) != 1) {
    return internal::OpenSslError("EVP_KDF_derive(HKDF-SHA256)");
  }
  return out;
}

absl::Status CheckLength(std::size_t length) {
  if (length >= 1 && length <= kHkdfSha256MaxOutput) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "HKDF-SHA256 output length: expected 1 to ", kHkdfSha256MaxOutput, " bytes, got ", length));
}

}  // namespace

absl::StatusOr<SecretBytes> HkdfSha256(std::span<const std::uint8_t> ikm,
                                       std::span<const std::uint8_t> salt,
                                       std::span<const std::uint8_t> info, std::size_t length) {
  if (ikm.empty()) return absl::InvalidArgumentError("HKDF-SHA256: input keying material is empty");
  if (absl::Status s = CheckLength(length); !s.ok()) return s;
  return RunHkdf(EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND, ikm, salt, info, length);
}

absl::StatusOr<SecretBytes> HkdfSha256Extract(std::span<const std::uint8_t> ikm,
                                              std::span<const std::uint8_t> salt) {
  if (ikm.empty()) return absl::InvalidArgumentError("HKDF-SHA256: input keying material is empty");
  return RunHkdf(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, ikm, salt, {}, kHkdfSha256HashSize);
}

absl::StatusOr<SecretBytes> HkdfSha256Expand(std::span<const std::uint8_t> prk,
                                             std::span<const std::uint8_t> info,
                                             std::size_t length) {
  if (prk.size() < kHkdfSha256HashSize) {
    return absl::InvalidArgumentError(absl::StrCat("HKDF-SHA256 expand: expected a PRK of at least ",
                                                   kHkdfSha256HashSize, " bytes, got ", prk.size()));
  }
  if (absl::Status s = CheckLength(length); !s.ok()) return s;
  return RunHkdf(EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, {}, info, length);
}

}  // namespace cohort::crypto
