#pragma once
// A participant's startup kit: one directory (mode 0700) with what it needs to join
// the federation over mutual TLS.
//   cert.pem     the participant's certificate (crypto/certificates.h says what it binds)
//   key.pem      its private key, PKCS#8 PEM, mode 0600 from creation
//   ca.pem       the federation CA certificate (the only trust anchor)
//   config.json  {"federation", "name", "role", "server_address"}
//   crl.pem      server kit only: the CRL the server checks client certificates against
//   crls/HASH.r0 server kit only: the same CRL under the name OpenSSL's hashed-directory
//                lookup expects, for grpc::experimental::TlsServerCredentialsOptions::
//                set_crl_directory("<kit>/crls")
// For gRPC: pem_root_certs = ca.pem, and the key/cert pair is key.pem / cert.pem, as
// grpc::SslServerCredentialsOptions and grpc::SslCredentialsOptions expect them.
// Kits are created by crypto/provisioning.h.

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/certificate_authority.h"
#include "crypto/certificates.h"
#include "crypto/secret.h"

namespace cohort::crypto {

// What config.json holds.
struct StartupKitConfig {
  std::string federation;
  std::string name;
  Role role = Role::kSite;
  std::string server_address;  // host:port, [v6]:port for IPv6.
};

// A startup kit read back and checked: the certificate verifies against ca.pem (and
// crl.pem when the kit has one), its identity matches config.json, and key.pem is
// mode 0600 and matches the certificate.
struct StartupKit {
  std::string federation;
  std::string name;
  Role role = Role::kSite;
  std::string server_address;
  std::string certificate_pem;
  SecretBytes private_key_pem;
  std::string ca_pem;
  std::string crl_pem;  // Empty when the kit has no crl.pem.
};
absl::StatusOr<StartupKit> LoadStartupKit(const std::filesystem::path& kit_dir);

// Writes the kit of `config.name` to out/NAME: built under a temporary name, then
// renamed into place; AlreadyExists if out/NAME exists. `crl_pem` is written only
// into a server kit.
absl::Status WriteStartupKit(const std::filesystem::path& out, const StartupKitConfig& config,
                             const IssuedCertificate& issued, std::string_view ca_pem,
                             std::string_view crl_pem);

// Replaces the CRL of the server kit in `kit_dir` (crl.pem and crls/HASH.r0).
absl::Status WriteServerCrl(const std::filesystem::path& kit_dir, std::string_view ca_pem,
                            std::string_view crl_pem);

}  // namespace cohort::crypto
