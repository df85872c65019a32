#include "crypto/provisioning.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <set>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "core/names.h"
#include "absl/strings/str_cat.h"
#include "crypto/certificate_authority.h"
#include "crypto/json_fields.h"
#include "crypto/secret_file.h"
#include "crypto/startup_kit.h"
#include "storage/atomic_write.h"
#include "storage/directory.h"
#include "storage/file.h"

namespace cohort::crypto {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kCaCertificateFile = "ca.pem";
constexpr std::string_view kCaKeyFile = "ca-key.pem";
constexpr std::string_view kCrlFile = "crl.pem";
constexpr std::string_view kFederationFile = "federation.json";
constexpr std::string_view kIssuedDirectory = "issued";
constexpr std::string_view kKitCaFile = "ca.pem";

absl::string_view ToAbsl(std::string_view text) { return {text.data(), text.size()}; }

}  // namespace

namespace {

absl::Status ValidateParticipant(const ParticipantSpec& participant) {
  const std::string field = absl::StrCat(ToAbsl(RoleName(participant.role)), " name");
  if (absl::Status s = core::ValidateName(field, participant.name); !s.ok()) return s;
  const std::string lower = absl::AsciiStrToLower(participant.name);
  if (lower == kCaDirectoryName || lower == kServerParticipantName) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": \"", participant.name,
                                                   "\" is reserved (the CA and server "
                                                   "directories use it)"));
  }
  if (participant.role == Role::kServer) {
    return absl::InvalidArgumentError(absl::StrCat(
        "participant \"", participant.name,
        "\": the server's kit is created with the federation; add sites, admins or auditors"));
  }
  return absl::OkStatus();
}

absl::Status ValidateParticipants(const std::vector<ParticipantSpec>& participants) {
  std::set<std::string> seen;
  for (const ParticipantSpec& participant : participants) {
    if (absl::Status s = ValidateParticipant(participant); !s.ok()) return s;
    if (!seen.insert(participant.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("participant name \"", participant.name, "\" is given twice"));
    }
  }
  return absl::OkStatus();
}

bool IsIpv4(const std::string& host) {
  unsigned char buffer[sizeof(in_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1;
}
bool IsIpv6(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

bool IsDnsName(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::size_t start = 0;
  while (start <= host.size()) {
    const std::size_t dot = std::min(host.find('.', start), host.size());
    const std::string_view label = host.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    start = dot + 1;
  }
  return true;
}

absl::Status ValidateHost(std::string_view field, const std::string& host) {
  if (IsIpv4(host) || IsIpv6(host) || IsDnsName(host)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      ToAbsl(field), ": expected a DNS name or an IP address (give the port separately), got \"",
      host, "\""));
}

bool IsLoopbackName(const std::string& host) {
  return absl::AsciiStrToLower(host) == "localhost" || host == "127.0.0.1" || host == "::1";
}

// The server certificate's DNS and IP names. A loopback name brings in all three
// loopback spellings, so local tests can dial any of them.
void ServerNames(const FederationSpec& spec, CertificateRequest& request) {
  std::vector<std::string> hosts = {spec.server_host};
  hosts.insert(hosts.end(), spec.server_alt_names.begin(), spec.server_alt_names.end());
  if (std::any_of(hosts.begin(), hosts.end(), IsLoopbackName)) {
    hosts.insert(hosts.end(), {"localhost", "127.0.0.1", "::1"});
  }
  for (const std::string& host : hosts) {
    std::vector<std::string>& list =
        IsIpv4(host) || IsIpv6(host) ? request.ip_addresses : request.dns_names;
    if (std::find(list.begin(), list.end(), host) == list.end()) list.push_back(host);
  }
}

std::string ServerAddress(const std::string& host, std::uint16_t port) {
  return IsIpv6(host) ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

absl::Status MakePrivateDirectory(const fs::path& path) {
  if (::mkdir(path.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot create directory ", path.string(), ": ",
                                            std::generic_category().message(errno)));
  }
  return absl::OkStatus();
}

absl::Status CheckAbsent(const fs::path& path) {
  std::error_code error;
  if (fs::exists(fs::symlink_status(path, error))) {
    return absl::AlreadyExistsError(
        absl::StrCat(path.string(), " already exists; refusing to overwrite it"));
  }
  return absl::OkStatus();
}

absl::Status EnsureOutputDirectory(const fs::path& out) {
  std::error_code error;
  fs::create_directories(out, error);
  if (error || !fs::is_directory(out)) {
    return absl::InvalidArgumentError(absl::StrCat("output directory ", out.string(),
                                                   ": cannot create it (",
                                                   error ? error.message() : "not a directory",
                                                   ")"));
  }
  return absl::OkStatus();
}

fs::path IssuedPath(const fs::path& ca_dir, std::string_view name) {
  return ca_dir / kIssuedDirectory / absl::StrCat(ToAbsl(name), ".pem");
}

// An exclusive advisory lock on the CA directory, held while it is read and updated,
// so that two `provision add` or `revoke` runs cannot interleave their CRL updates; the
// second waits for the first. Closing the directory releases it.
absl::StatusOr<storage::File> LockCaDirectory(const fs::path& ca_dir) {
  absl::StatusOr<storage::File> dir = storage::File::OpenDirectory(ca_dir);
  if (!dir.ok()) {
    return absl::Status(dir.status().code(),
                        absl::StrCat("CA directory: ", dir.status().message()));
  }
  if (absl::Status s = dir->LockExclusive(storage::File::LockWait::kWait); !s.ok()) return s;
  return dir;
}

struct LoadedCa {
  CertificateAuthority authority;
  std::string server_address;
};

absl::StatusOr<LoadedCa> LoadCa(const fs::path& ca_dir) {
  absl::StatusOr<std::string> cert_pem = storage::ReadFile(ca_dir / kCaCertificateFile);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<SecretBytes> key_pem = ReadSecretFile(ca_dir / kCaKeyFile);
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<CertificateAuthority> authority = CertificateAuthority::Load(*cert_pem, *key_pem);
  if (!authority.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CA directory ", ca_dir.string(), ": ", authority.status().message()));
  }
  const fs::path federation_path = ca_dir / kFederationFile;
  absl::StatusOr<nlohmann::json> federation_json = internal::ReadJsonObject(federation_path);
  if (!federation_json.ok()) return federation_json.status();
  absl::StatusOr<std::string> federation =
      internal::StringField(*federation_json, federation_path, "federation");
  if (!federation.ok()) return federation.status();
  absl::StatusOr<std::string> server_address =
      internal::StringField(*federation_json, federation_path, "server_address");
  if (!server_address.ok()) return server_address.status();
  if (*federation != authority->federation()) {
    return absl::InvalidArgumentError(
        absl::StrCat(federation_path.string(), ": federation \"", *federation,
                     "\" differs from the CA certificate's \"", authority->federation(), "\""));
  }
  return LoadedCa{std::move(*authority), std::move(*server_address)};
}

}  // namespace

absl::StatusOr<std::vector<ProvisionedKit>> ProvisionFederation(const FederationSpec& spec,
                                                                const fs::path& out) {
  if (absl::Status s = core::ValidateName("federation", spec.federation); !s.ok()) return s;
  if (absl::Status s = ValidateHost("server host", spec.server_host); !s.ok()) return s;
  for (const std::string& alt : spec.server_alt_names) {
    if (absl::Status s = ValidateHost("server alternative name", alt); !s.ok()) return s;
  }
  if (spec.server_port == 0) return absl::InvalidArgumentError("server port: expected 1 to 65535, got 0");
  if (absl::Status s = ValidateParticipants(spec.participants); !s.ok()) return s;
  if (absl::Status s = EnsureOutputDirectory(out); !s.ok()) return s;
  if (absl::Status s = CheckAbsent(out / kCaDirectoryName); !s.ok()) return s;
  if (absl::Status s = CheckAbsent(out / kServerParticipantName); !s.ok()) return s;
  for (const ParticipantSpec& participant : spec.participants) {
    if (absl::Status s = CheckAbsent(out / participant.name); !s.ok()) return s;
  }

  // Everything is issued in memory first, so a bad input or an OpenSSL failure leaves
  // no files behind.
  absl::StatusOr<CertificateAuthority> ca =
      CertificateAuthority::Create(spec.federation, spec.ca_validity_days);
  if (!ca.ok()) return ca.status();
  std::vector<ParticipantSpec> everyone = {{std::string(kServerParticipantName), Role::kServer}};
  everyone.insert(everyone.end(), spec.participants.begin(), spec.participants.end());
  std::vector<IssuedCertificate> issued;
  for (const ParticipantSpec& participant : everyone) {
    CertificateRequest request;
    request.name = participant.name;
    request.role = participant.role;
    request.validity_days = spec.certificate_validity_days;
    if (participant.role == Role::kServer) ServerNames(spec, request);
    absl::StatusOr<IssuedCertificate> certificate = ca->Issue(request);
    if (!certificate.ok()) return certificate.status();
    issued.push_back(std::move(*certificate));
  }
  absl::StatusOr<std::string> crl = ca->CreateCrl();
  if (!crl.ok()) return crl.status();
  absl::StatusOr<SecretBytes> ca_key = ca->PrivateKeyPem();
  if (!ca_key.ok()) return ca_key.status();
  const std::string server_address = ServerAddress(spec.server_host, spec.server_port);

  {
    absl::StatusOr<storage::StagingDirectory> ca_dir =
        storage::StagingDirectory::Create(out, kCaDirectoryName);
    if (!ca_dir.ok()) return ca_dir.status();
    const fs::path dir = ca_dir->path();
    nlohmann::ordered_json federation_json;
    federation_json["federation"] = spec.federation;
    federation_json["server_address"] = server_address;
    if (absl::Status s = storage::WriteFileAtomically(
            dir / kCaKeyFile, ca_key->span(), storage::kSecretFileMode, storage::IfExists::kFail);
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            storage::WriteFileAtomically(dir / kCaCertificateFile, ca->certificate_pem(),
                                         storage::kPublicFileMode, storage::IfExists::kFail);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = storage::WriteFileAtomically(
            dir / kCrlFile, *crl, storage::kPublicFileMode, storage::IfExists::kFail);
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            storage::WriteFileAtomically(dir / kFederationFile, federation_json.dump(2) + "\n",
                                         storage::kPublicFileMode, storage::IfExists::kFail);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = MakePrivateDirectory(dir / kIssuedDirectory); !s.ok()) return s;
    for (std::size_t i = 0; i < everyone.size(); ++i) {
      if (absl::Status s = storage::WriteFileAtomically(IssuedPath(dir, everyone[i].name),
                                               issued[i].certificate_pem, storage::kPublicFileMode,
                                               storage::IfExists::kFail);
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = storage::SyncDirectory(dir / kIssuedDirectory); !s.ok()) return s;
    if (absl::Status s = ca_dir->Publish(); !s.ok()) return s;
  }

  std::vector<ProvisionedKit> kits;
  for (std::size_t i = 0; i < everyone.size(); ++i) {
    const ParticipantSpec& participant = everyone[i];
    const StartupKitConfig config{spec.federation, participant.name, participant.role,
                                  server_address};
    if (absl::Status s = WriteStartupKit(out, config, issued[i], ca->certificate_pem(), *crl);
        !s.ok()) {
      return s;
    }
    kits.push_back({participant.name, participant.role, out / participant.name});
  }
  return kits;
}

absl::StatusOr<std::vector<ProvisionedKit>> AddParticipants(
    const fs::path& ca_dir, const std::vector<ParticipantSpec>& participants, const fs::path& out,
    int certificate_validity_days) {
  if (participants.empty()) {
    return absl::InvalidArgumentError("participants: expected at least one site, admin or auditor");
  }
  if (absl::Status s = ValidateParticipants(participants); !s.ok()) return s;
  absl::StatusOr<storage::File> lock = LockCaDirectory(ca_dir);
  if (!lock.ok()) return lock.status();
  absl::StatusOr<LoadedCa> ca = LoadCa(ca_dir);
  if (!ca.ok()) return ca.status();
  if (absl::Status s = EnsureOutputDirectory(out); !s.ok()) return s;
  for (const ParticipantSpec& participant : participants) {
    if (absl::Status s = CheckAbsent(IssuedPath(ca_dir, participant.name)); !s.ok()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "participant \"", participant.name, "\" was already issued a certificate by the CA in ",
          ca_dir.string(), " (names are never reissued; choose another)"));
    }
    if (absl::Status s = CheckAbsent(out / participant.name); !s.ok()) return s;
  }
  absl::StatusOr<std::string> crl = storage::ReadFile(ca_dir / kCrlFile);
  if (!crl.ok()) return crl.status();

  std::vector<IssuedCertificate> issued;
  for (const ParticipantSpec& participant : participants) {
    CertificateRequest request;
    request.name = participant.name;
    request.role = participant.role;
    request.validity_days = certificate_validity_days;
    absl::StatusOr<IssuedCertificate> certificate = ca->authority.Issue(request);
    if (!certificate.ok()) return certificate.status();
    issued.push_back(std::move(*certificate));
  }

  std::vector<ProvisionedKit> kits;
  for (std::size_t i = 0; i < participants.size(); ++i) {
    const ParticipantSpec& participant = participants[i];
    // The CA records a certificate before anyone can hold it, so every certificate
    // in the wild can be revoked by name.
    const fs::path record = IssuedPath(ca_dir, participant.name);
    if (absl::Status s = storage::WriteFileAtomically(
            record, issued[i].certificate_pem, storage::kPublicFileMode, storage::IfExists::kFail);
        !s.ok()) {
      return s;
    }
    const StartupKitConfig config{ca->authority.federation(), participant.name, participant.role,
                                  ca->server_address};
    if (absl::Status s =
            WriteStartupKit(out, config, issued[i], ca->authority.certificate_pem(), *crl);
        !s.ok()) {
      // The kit, and so the key, never existed: nobody holds this certificate, and
      // forgetting it lets the name be issued again.
      ::unlink(record.c_str());
      return s;
    }
    kits.push_back({participant.name, participant.role, out / participant.name});
  }
  return kits;
}

absl::StatusOr<std::string> RevokeParticipant(const fs::path& ca_dir, std::string_view name,
                                              const fs::path& server_kit) {
  if (absl::Status s = core::ValidateName("participant name", name); !s.ok()) return s;
  absl::StatusOr<storage::File> lock = LockCaDirectory(ca_dir);
  if (!lock.ok()) return lock.status();
  absl::StatusOr<LoadedCa> ca = LoadCa(ca_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<std::string> certificate = storage::ReadFile(IssuedPath(ca_dir, name));
  if (!certificate.ok()) {
    return absl::NotFoundError(absl::StrCat("participant \"", ToAbsl(name),
                                            "\": the CA in ", ca_dir.string(),
                                            " never issued it a certificate"));
  }
  std::string current_crl;
  if (absl::StatusOr<std::string> existing = storage::ReadFile(ca_dir / kCrlFile); existing.ok()) {
    current_crl = std::move(*existing);
  } else {
    absl::StatusOr<std::string> empty = ca->authority.CreateCrl();
    if (!empty.ok()) return empty.status();
    current_crl = std::move(*empty);
  }
  if (!server_kit.empty()) {
    absl::StatusOr<std::string> kit_ca = storage::ReadFile(server_kit / kKitCaFile);
    if (!kit_ca.ok()) return kit_ca.status();
    if (*kit_ca != ca->authority.certificate_pem()) {
      return absl::InvalidArgumentError(absl::StrCat("server kit ", server_kit.string(),
                                                     ": its ca.pem is not the CA in ",
                                                     ca_dir.string()));
    }
  }
  absl::StatusOr<std::string> crl = ca->authority.AddToCrl(current_crl, *certificate);
  if (!crl.ok()) {
    if (absl::IsAlreadyExists(crl.status())) {
      return absl::AlreadyExistsError(
          absl::StrCat("participant \"", ToAbsl(name), "\" is already revoked"));
    }
    return crl.status();
  }
  if (absl::Status s = storage::WriteFileAtomically(
          ca_dir / kCrlFile, *crl, storage::kPublicFileMode, storage::IfExists::kReplace);
      !s.ok()) {
    return s;
  }
  if (!server_kit.empty()) {
    if (absl::Status s = WriteServerCrl(server_kit, ca->authority.certificate_pem(), *crl);
        !s.ok()) {
      return s;
    }
  }
  return *crl;
}

}  // namespace cohort::crypto
