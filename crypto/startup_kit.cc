#include "crypto/startup_kit.h"

#include <sys/stat.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "crypto/json_fields.h"
#include "crypto/secret_file.h"
#include "storage/atomic_write.h"
#include "storage/directory.h"

namespace cohort::crypto {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kCertificateFile = "cert.pem";
constexpr std::string_view kPrivateKeyFile = "key.pem";
constexpr std::string_view kCaFile = "ca.pem";
constexpr std::string_view kConfigFile = "config.json";
constexpr std::string_view kCrlFile = "crl.pem";
constexpr std::string_view kHashedCrlDirectory = "crls";

absl::string_view ToAbsl(std::string_view text) { return {text.data(), text.size()}; }

std::string ConfigJson(const StartupKitConfig& config) {
  nlohmann::ordered_json json;
  json["federation"] = config.federation;
  json["name"] = config.name;
  json["role"] = RoleName(config.role);
  json["server_address"] = config.server_address;
  return json.dump(2) + "\n";
}

}  // namespace

absl::Status WriteServerCrl(const fs::path& kit_dir, std::string_view ca_pem,
                            std::string_view crl_pem) {
  absl::StatusOr<std::string> hashed_name = HashedCrlFileName(ca_pem);
  if (!hashed_name.ok()) return hashed_name.status();
  const fs::path hashed_dir = kit_dir / kHashedCrlDirectory;
  if (::mkdir(hashed_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("cannot create directory ", hashed_dir.string(), ": ",
                                            std::generic_category().message(errno)));
  }
  if (absl::Status s =
          storage::WriteFileAtomically(hashed_dir / *hashed_name, crl_pem, storage::kPublicFileMode,
                                       storage::IfExists::kReplace);
      !s.ok()) {
    return s;
  }
  return storage::WriteFileAtomically(kit_dir / kCrlFile, crl_pem, storage::kPublicFileMode,
                                      storage::IfExists::kReplace);
}

absl::Status WriteStartupKit(const fs::path& out, const StartupKitConfig& config,
                             const IssuedCertificate& issued, std::string_view ca_pem,
                             std::string_view crl_pem) {
  absl::StatusOr<storage::StagingDirectory> kit =
      storage::StagingDirectory::Create(out, config.name);
  if (!kit.ok()) return kit.status();
  const fs::path dir = kit->path();
  // The private key first: if anything else fails, the staging directory, key
  // included, is removed.
  if (absl::Status s =
          storage::WriteFileAtomically(dir / kPrivateKeyFile, issued.private_key_pem.span(),
                                       storage::kSecretFileMode, storage::IfExists::kFail);
      !s.ok()) {
    return s;
  }
  const std::string config_json = ConfigJson(config);
  for (const auto& [file, text] : std::initializer_list<std::pair<std::string_view, std::string_view>>{
           {kCertificateFile, issued.certificate_pem}, {kCaFile, ca_pem}, {kConfigFile, config_json}}) {
    if (absl::Status s = storage::WriteFileAtomically(dir / file, text, storage::kPublicFileMode,
                                                      storage::IfExists::kFail);
        !s.ok()) {
      return s;
    }
  }
  if (config.role == Role::kServer && !crl_pem.empty()) {
    if (absl::Status s = WriteServerCrl(dir, ca_pem, crl_pem); !s.ok()) return s;
  }
  return kit->Publish();
}

absl::StatusOr<StartupKit> LoadStartupKit(const fs::path& kit_dir) {
  const fs::path config_path = kit_dir / kConfigFile;
  absl::StatusOr<nlohmann::json> config = internal::ReadJsonObject(config_path);
  if (!config.ok()) return config.status();
  StartupKit kit;
  for (auto [key, field] : std::initializer_list<std::pair<const char*, std::string*>>{
           {"federation", &kit.federation},
           {"name", &kit.name},
           {"server_address", &kit.server_address}}) {
    absl::StatusOr<std::string> value = internal::StringField(*config, config_path, key);
    if (!value.ok()) return value.status();
    *field = std::move(*value);
  }
  absl::StatusOr<std::string> role_name = internal::StringField(*config, config_path, "role");
  if (!role_name.ok()) return role_name.status();
  absl::StatusOr<Role> role = ParseRole(*role_name);
  if (!role.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path.string(), ": ", role.status().message()));
  }
  kit.role = *role;

  absl::StatusOr<std::string> certificate = storage::ReadFile(kit_dir / kCertificateFile);
  if (!certificate.ok()) return certificate.status();
  kit.certificate_pem = std::move(*certificate);
  absl::StatusOr<SecretBytes> key = ReadSecretFile(kit_dir / kPrivateKeyFile);
  if (!key.ok()) return key.status();
  kit.private_key_pem = std::move(*key);
  absl::StatusOr<std::string> ca = storage::ReadFile(kit_dir / kCaFile);
  if (!ca.ok()) return ca.status();
  kit.ca_pem = std::move(*ca);
  if (absl::StatusOr<std::string> crl = storage::ReadFile(kit_dir / kCrlFile); crl.ok()) {
    kit.crl_pem = std::move(*crl);
  } else if (!absl::IsNotFound(crl.status())) {
    return crl.status();
  }

  // The kit's own certificate, checked against its own CA: a failure here is a kit put
  // together from two provisionings (or a CA rotated under it), not a peer's fault.
  absl::StatusOr<CertificateIdentity> identity =
      VerifyCertificate(kit.certificate_pem, kit.ca_pem, kit.crl_pem,
                        absl::StrCat("startup kit ", kit_dir.string(),
                                     ": the kit's own certificate ", ToAbsl(kCertificateFile)),
                        absl::StrCat("the kit's CA ", ToAbsl(kCaFile)));
  if (!identity.ok()) {
    if (!absl::IsUnauthenticated(identity.status())) return identity.status();
    return absl::InvalidArgumentError(
        absl::StrCat(identity.status().message(), "; ", ToAbsl(kCertificateFile), " must chain to ",
                     ToAbsl(kCaFile),
                     " of the same provisioning: provision this participant's kit again with the "
                     "federation's CA"));
  }
  if (identity->name != kit.name || identity->role != kit.role ||
      identity->federation != kit.federation) {
    return absl::InvalidArgumentError(absl::StrCat(
        "startup kit ", kit_dir.string(), ": config.json says ", kit.name, " (",
        ToAbsl(RoleName(kit.role)), ") of ", kit.federation, " but cert.pem says ", identity->name,
        " (", ToAbsl(RoleName(identity->role)), ") of ", identity->federation));
  }
  if (absl::Status s = CheckKeyMatchesCertificate(kit.certificate_pem, kit.private_key_pem);
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("startup kit ", kit_dir.string(), ": ", s.message()));
  }
  return kit;
}

}  // namespace cohort::crypto
