#pragma once
// Internal to crypto/: parsing and PEM encoding of certificates, CRLs and keys, shared
// by the certificate authority and the verifier. Not part of the public API.

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "crypto/openssl_util.h"
#include "crypto/secret.h"

namespace cohort::crypto::internal {

inline absl::string_view ToAbsl(std::string_view text) { return {text.data(), text.size()}; }

// `what` names the input in the error, for example "CA certificate".
absl::StatusOr<X509Ptr> ParseCertificate(std::string_view pem, absl::string_view what);
absl::StatusOr<X509CrlPtr> ParseCrl(std::string_view pem);
absl::StatusOr<PkeyPtr> ParsePrivateKey(const SecretBytes& pem, absl::string_view what);

absl::StatusOr<std::string> CertificateToPem(X509* cert);
absl::StatusOr<std::string> CrlToPem(X509_CRL* crl);
// PKCS#8 PEM, unencrypted, in wiped-on-free memory.
absl::StatusOr<SecretBytes> PrivateKeyToPem(EVP_PKEY* key);

// Lower-case hex of a serial number ("" if it cannot be converted).
std::string SerialHex(const ASN1_INTEGER* serial);
// The one entry `nid` of `name` as UTF-8; InvalidArgument when absent or repeated.
absl::StatusOr<std::string> NameEntry(const X509_NAME* name, int nid, absl::string_view what);

}  // namespace cohort::crypto::internal
