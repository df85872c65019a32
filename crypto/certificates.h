#pragma once
// The federation's X.509 certificates: what they contain, and how a peer's
// certificate is read and verified. crypto/certificate_authority.h issues them and
// crypto/provisioning.h puts them on disk. All keys are ECDSA P-256, all signatures
// ECDSA with SHA-256: the pair every TLS stack, gRPC's included, accepts.
//
// What a participant certificate binds, and where:
//   subject O                 the federation name
//   subject CN                the participant name (site, admin, auditor name; "server")
//   subjectAltName URI        cohort://role/<role>, role one of server, site, admin,
//                             auditor. Exactly one such URI per certificate. It is
//                             signed by the CA like the rest of the certificate, so a
//                             peer cannot claim a role it was not issued.
//   subjectAltName DNS / IP   server only: the host clients dial (TLS hostname check);
//                             "localhost", "127.0.0.1" and "::1" all go in together
//   extendedKeyUsage          serverAuth for the server, clientAuth for everyone else
//   basicConstraints          CA:FALSE (critical); keyUsage digitalSignature (critical)
// The CA certificate: subject O = federation, CN = "<federation> Cohort CA",
// basicConstraints CA:TRUE pathlen:0, keyUsage keyCertSign + cRLSign. Serial numbers
// are 128 random bits.
//
// Revocation: a v2 CRL signed by the CA, with a CRL number that grows by one per
// change. Its nextUpdate is the CA certificate's notAfter, because CRLs are published
// when something is revoked rather than on a schedule, and an expired CRL would make
// every peer fail verification.

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret.h"

namespace cohort::crypto {

enum class Role { kServer, kSite, kAdmin, kAuditor };

// "server", "site", "admin", "auditor".
std::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(std::string_view name);

inline constexpr std::string_view kRoleUriPrefix = "cohort://role/";

// Who a certificate says its holder is.
struct CertificateIdentity {
  std::string federation;  // Subject O.
  std::string name;        // Subject CN.
  Role role = Role::kSite;
  std::string serial_hex;  // Lower-case hex, for logs and audit entries.
};

// The file name OpenSSL's hashed-directory lookup (and so gRPC's experimental
// TlsServerCredentialsOptions::set_crl_directory) expects for a CRL issued by the CA
// in `ca_pem`: the 8-hex-digit hash of the CA's subject name, then ".r0".
absl::StatusOr<std::string> HashedCrlFileName(std::string_view ca_pem);

// Reads (federation, name, role, serial) from a PEM certificate without verifying
// it. InvalidArgument when the certificate lacks a CN or carries no role URI, more
// than one, or an unknown role.
absl::StatusOr<CertificateIdentity> ReadCertificateIdentity(std::string_view certificate_pem);

// OK when `private_key_pem` is the private key of `certificate_pem`'s public key;
// InvalidArgument otherwise.
absl::Status CheckKeyMatchesCertificate(std::string_view certificate_pem,
                                        const SecretBytes& private_key_pem);

// Verifies `certificate_pem` against the federation CA (`ca_pem`) at the current
// time: signature chain, validity period, and, when `crl_pem` is not empty, that the
// CRL is signed by the CA, has not expired, and does not list the certificate.
// Returns the identity on success and Unauthenticated, with OpenSSL's reason
// ("certificate revoked", "certificate has expired", ...), otherwise.
absl::StatusOr<CertificateIdentity> VerifyPeerCertificate(std::string_view certificate_pem,
                                                          std::string_view ca_pem,
                                                          std::string_view crl_pem);

// The same check, with errors that call the certificate `certificate_name` and the CA
// `ca_name`: "<certificate_name> "A" (serial 1f) failed verification against <ca_name>:
// unable to get local issuer certificate". VerifyPeerCertificate names them "peer
// certificate" and "the federation CA".
absl::StatusOr<CertificateIdentity> VerifyCertificate(std::string_view certificate_pem, std::string_view ca_pem,
                                                      std::string_view crl_pem, std::string_view certificate_name,
                                                      std::string_view ca_name);

}  // namespace cohort::crypto
