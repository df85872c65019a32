#include "crypto/x509_util.h"

#include <openssl/pem.h>

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"

namespace cohort::crypto::internal {
namespace {

absl::StatusOr<std::string> BioContents(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  if (size < 0 || (size > 0 && data == nullptr)) return OpenSslError("BIO_get_mem_data");
  return std::string(data, static_cast<std::size_t>(size));
}

}  // namespace

absl::StatusOr<X509Ptr> ParseCertificate(std::string_view pem, absl::string_view what) {
  BioPtr bio = internal::MemoryBioOver(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": not a PEM certificate (", internal::DrainOpenSslErrors(), ")"));
  }
  return cert;
}

absl::StatusOr<X509CrlPtr> ParseCrl(std::string_view pem) {
  BioPtr bio = internal::MemoryBioOver(pem);
  X509CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (crl == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("CRL: not a PEM CRL (", internal::DrainOpenSslErrors(), ")"));
  }
  return crl;
}


absl::StatusOr<PkeyPtr> ParsePrivateKey(const SecretBytes& pem, absl::string_view what) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not an unencrypted PEM private key (", DrainOpenSslErrors(), ")"));
  }
  return key;
}

absl::StatusOr<std::string> CertificateToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM_write_bio_X509");
  }
  return BioContents(bio.get());
}

absl::StatusOr<std::string> CrlToPem(X509_CRL* crl) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509_CRL(bio.get(), crl) != 1) {
    return OpenSslError("PEM_write_bio_X509_CRL");
  }
  return BioContents(bio.get());
}

// The memory BIO wipes its buffer when freed; the copy goes into wiped memory too.
absl::StatusOr<SecretBytes> PrivateKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  if (size <= 0 || data == nullptr) return OpenSslError("BIO_get_mem_data(private key)");
  return SecretBytes::CopyOf(
      {reinterpret_cast<const std::uint8_t*>(data), static_cast<std::size_t>(size)});
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (bn == nullptr) return "";
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) return "";
  std::string text(hex);
  OPENSSL_free(hex);
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

absl::StatusOr<std::string> NameEntry(const X509_NAME* name, int nid, absl::string_view what) {
  const int index = X509_NAME_get_index_by_NID(name, nid, -1);
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("certificate subject has no ", what));
  }
  if (X509_NAME_get_index_by_NID(name, nid, index) >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("certificate subject has more than one ", what));
  }
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, data);
  if (length < 0) return OpenSslError(absl::StrCat("ASN1_STRING_to_UTF8(", what, ")"));
  std::string text(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  return text;
}

}  // namespace cohort::crypto::internal
