#pragma once
// Provisioning: the federation CA and one startup kit per participant, on disk.
//
// Layout written by ProvisionFederation(out):
//   out/ca/ca.pem            CA certificate                          0644
//   out/ca/ca-key.pem        CA private key (PKCS#8 PEM)             0600
//   out/ca/crl.pem           current CRL, signed by the CA           0644
//   out/ca/federation.json   {"federation", "server_address"}        0644
//   out/ca/issued/NAME.pem   every certificate the CA issued         0644
//   out/server/              the server's kit (participant name "server")
//   out/NAME/                one kit per site, admin and auditor
// A kit directory holds cert.pem, key.pem, ca.pem and config.json (the server kit
// also its CRL): crypto/startup_kit.h has the layout and LoadStartupKit.
//
// Every file is written atomically (storage/atomic_write.h) and every directory is
// built under a temporary name and renamed into place, so an existing kit or CA
// directory is never overwritten: the call fails with AlreadyExists instead.
// Participant names are also identities: a name the CA has issued a certificate for
// (listed in ca/issued/) is never issued again, even after revocation. The CA
// directory is locked (flock) while a participant is added or revoked.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/certificates.h"
#include "crypto/startup_kit.h"

namespace cohort::crypto {

inline constexpr std::string_view kCaDirectoryName = "ca";
inline constexpr std::string_view kServerParticipantName = "server";
inline constexpr std::uint16_t kDefaultServerPort = 50051;

// Participant and federation names follow the one name rule, core::ValidateName
// (core/names.h), as sites joining and job names do.

struct ParticipantSpec {
  std::string name;  // 1-64 of [A-Za-z0-9._-], starting with a letter or digit.
  Role role = Role::kSite;  // site, admin or auditor (the server is implicit).
};

struct FederationSpec {
  std::string federation;  // Same character rules as a participant name.
  // The host clients dial: a DNS name or an IP address. It goes into the server
  // certificate; "localhost", "127.0.0.1" and "::1" each bring in all three.
  std::string server_host;
  std::uint16_t server_port = kDefaultServerPort;
  std::vector<std::string> server_alt_names;  // More DNS names or IPs for the server.
  std::vector<ParticipantSpec> participants;
  int ca_validity_days = 3650;
  int certificate_validity_days = 365;
};

struct ProvisionedKit {
  std::string name;
  Role role = Role::kSite;
  std::filesystem::path directory;
};

// Creates out/ca, out/server and one kit per participant. Checks every input and
// that none of the directories exists before writing anything. InvalidArgument names
// the bad field; AlreadyExists names the existing directory.
absl::StatusOr<std::vector<ProvisionedKit>> ProvisionFederation(const FederationSpec& spec,
                                                                const std::filesystem::path& out);

// Issues kits for more participants with the CA in `ca_dir`, into out/NAME.
// AlreadyExists when a name was issued before or its kit directory exists.
absl::StatusOr<std::vector<ProvisionedKit>> AddParticipants(
    const std::filesystem::path& ca_dir, const std::vector<ParticipantSpec>& participants,
    const std::filesystem::path& out, int certificate_validity_days = 365);

// Adds the certificate issued to `name` to ca_dir/crl.pem and returns the new CRL.
// When `server_kit` is not empty, the CRL is also written to server_kit/crl.pem and
// server_kit/crls/HASH.r0 (after checking that the kit belongs to this CA), which is
// what the server loads.
// NotFound when the CA never issued a certificate to `name`; AlreadyExists when it is
// already revoked.
absl::StatusOr<std::string> RevokeParticipant(const std::filesystem::path& ca_dir,
                                              std::string_view name,
                                              const std::filesystem::path& server_kit);

}  // namespace cohort::crypto
