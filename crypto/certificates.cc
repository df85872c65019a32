#include "crypto/certificates.h"

#include <openssl/x509v3.h>

#include <cstdio>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "crypto/openssl_util.h"
#include "crypto/x509_util.h"

namespace cohort::crypto {

using internal::GeneralNamesPtr;
using internal::OpenSslError;
using internal::NameEntry;
using internal::ParseCertificate;
using internal::ParseCrl;
using internal::ParsePrivateKey;
using internal::SerialHex;
using internal::PkeyPtr;
using internal::ToAbsl;
using internal::X509CrlPtr;
using internal::X509Ptr;

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kServer:
      return "server";
    case Role::kSite:
      return "site";
    case Role::kAdmin:
      return "admin";
    case Role::kAuditor:
      return "auditor";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  for (Role role : {Role::kServer, Role::kSite, Role::kAdmin, Role::kAuditor}) {
    if (RoleName(role) == name) return role;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "role: expected one of server, site, admin, auditor, got \"", ToAbsl(name), "\""));
}

absl::StatusOr<std::string> HashedCrlFileName(std::string_view ca_pem) {
  absl::StatusOr<X509Ptr> ca = ParseCertificate(ca_pem, "CA certificate");
  if (!ca.ok()) return ca.status();
  int ok = 0;
  const unsigned long hash =
      X509_NAME_hash_ex(X509_get_subject_name(ca->get()), nullptr, nullptr, &ok);
  if (ok != 1) return OpenSslError("X509_NAME_hash_ex");
  char name[32];
  std::snprintf(name, sizeof(name), "%08lx.r0", hash);
  return std::string(name);
}

absl::StatusOr<CertificateIdentity> ReadCertificateIdentity(std::string_view certificate_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCertificate(certificate_pem, "certificate");
  if (!cert.ok()) return cert.status();
  const X509_NAME* subject = X509_get_subject_name(cert->get());
  CertificateIdentity identity;
  absl::StatusOr<std::string> name = NameEntry(subject, NID_commonName, "CN (participant name)");
  if (!name.ok()) return name.status();
  identity.name = std::move(*name);
  absl::StatusOr<std::string> federation =
      NameEntry(subject, NID_organizationName, "O (federation)");
  if (!federation.ok()) return federation.status();
  identity.federation = std::move(*federation);
  identity.serial_hex = SerialHex(X509_get0_serialNumber(cert->get()));

  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert->get(), NID_subject_alt_name, nullptr, nullptr)));
  std::vector<std::string> role_uris;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* entry = sk_GENERAL_NAME_value(names.get(), i);
    if (entry->type != GEN_URI) continue;
    const ASN1_STRING* uri = entry->d.uniformResourceIdentifier;
    std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                     static_cast<std::size_t>(ASN1_STRING_length(uri)));
    if (absl::StartsWith(text, ToAbsl(kRoleUriPrefix))) role_uris.push_back(std::move(text));
  }
  if (role_uris.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "certificate for \"", identity.name, "\": expected exactly one subjectAltName URI ",
        ToAbsl(kRoleUriPrefix), "<role>, found ", role_uris.size()));
  }
  absl::StatusOr<Role> role = ParseRole(std::string_view(role_uris[0]).substr(kRoleUriPrefix.size()));
  if (!role.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("certificate for \"", identity.name,
                                                   "\": ", role.status().message()));
  }
  identity.role = *role;
  return identity;
}

absl::Status CheckKeyMatchesCertificate(std::string_view certificate_pem,
                                        const SecretBytes& private_key_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCertificate(certificate_pem, "certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<PkeyPtr> key = ParsePrivateKey(private_key_pem, "private key");
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "private key: does not match the public key of the certificate");
  }
  return absl::OkStatus();
}

absl::StatusOr<CertificateIdentity> VerifyPeerCertificate(std::string_view certificate_pem,
                                                          std::string_view ca_pem,
                                                          std::string_view crl_pem) {
  return VerifyCertificate(certificate_pem, ca_pem, crl_pem, "peer certificate", "the federation CA");
}

absl::StatusOr<CertificateIdentity> VerifyCertificate(std::string_view certificate_pem, std::string_view ca_pem,
                                                      std::string_view crl_pem, std::string_view certificate_name,
                                                      std::string_view ca_name) {
  absl::StatusOr<X509Ptr> cert = ParseCertificate(certificate_pem, ToAbsl(certificate_name));
  if (!cert.ok()) return cert.status();
  absl::StatusOr<X509Ptr> ca = ParseCertificate(ca_pem, "CA certificate");
  if (!ca.ok()) return ca.status();

  internal::X509StorePtr store(X509_STORE_new());
  if (store == nullptr || X509_STORE_add_cert(store.get(), ca->get()) != 1) {
    return OpenSslError("X509_STORE_add_cert");
  }
  unsigned long flags = X509_V_FLAG_X509_STRICT;
  if (!crl_pem.empty()) {
    absl::StatusOr<X509CrlPtr> crl = ParseCrl(crl_pem);
    if (!crl.ok()) return crl.status();
    if (X509_STORE_add_crl(store.get(), crl->get()) != 1) return OpenSslError("X509_STORE_add_crl");
    flags |= X509_V_FLAG_CRL_CHECK;
  }
  X509_STORE_set_flags(store.get(), flags);
  internal::X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr) != 1) {
    return OpenSslError("X509_STORE_CTX_init");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    absl::StatusOr<CertificateIdentity> claimed = ReadCertificateIdentity(certificate_pem);
    const std::string who = claimed.ok() ? absl::StrCat("\"", claimed->name, "\" (serial ",
                                                        claimed->serial_hex, ")")
                                         : std::string("of unknown identity");
    return absl::UnauthenticatedError(absl::StrCat(ToAbsl(certificate_name), " ", who,
                                                   " failed verification against ", ToAbsl(ca_name), ": ",
                                                   X509_verify_cert_error_string(error)));
  }
  return ReadCertificateIdentity(certificate_pem);
}

}  // namespace cohort::crypto
