// `cohort provision`: the federation CA and the participants' startup kits.
//
//   cohort provision --federation NAME --server HOST [--port 50051]
//                    [--server-alt-name NAME_OR_IP]... [--site NAME]... [--admin NAME]...
//                    [--auditor NAME]... --out DIR
//                    [--validity-days 365] [--ca-validity-days 3650]
//       creates DIR/ca, DIR/server and DIR/NAME for every participant.
//   cohort provision add --ca DIR/ca [--site NAME]... [--admin NAME]... [--auditor NAME]...
//                        --out DIR [--validity-days 365]
//       issues kits for more participants with the existing CA.
//   cohort provision revoke --ca DIR/ca --name NAME [--server-kit DIR/server]
//       adds NAME's certificate to DIR/ca/crl.pem (and to the server kit's crl.pem).
//
// Exit codes: 0 done; 2 bad input (a bad name, an existing kit, an unknown name,
// a participant already revoked); 1 the operation failed (I/O, OpenSSL).
// Layout and formats: crypto/provisioning.h and docs/security.md.

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cli/commands.h"
#include "crypto/provisioning.h"

namespace cohort::cli {
namespace {

struct ProvisionOptions {
  std::string federation;
  std::string server_host;
  int server_port = crypto::kDefaultServerPort;
  std::vector<std::string> server_alt_names;
  std::vector<std::string> sites;
  std::vector<std::string> admins;
  std::vector<std::string> auditors;
  std::string out;
  int validity_days = 365;
  int ca_validity_days = 3650;
  // add / revoke
  std::string ca_dir;
  std::string name;
  std::string server_kit;
};

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return 2;
    default:
      return 1;
  }
}

int Fail(const absl::Status& status, const char* what) {
  spdlog::error("provision {}: {}", what, std::string(status.message()));
  return ExitCodeFor(status);
}

std::vector<crypto::ParticipantSpec> Participants(const ProvisionOptions& options) {
  std::vector<crypto::ParticipantSpec> participants;
  for (const std::string& name : options.sites) participants.push_back({name, crypto::Role::kSite});
  for (const std::string& name : options.admins) participants.push_back({name, crypto::Role::kAdmin});
  for (const std::string& name : options.auditors) {
    participants.push_back({name, crypto::Role::kAuditor});
  }
  return participants;
}

void ReportKits(const std::vector<crypto::ProvisionedKit>& kits) {
  for (const crypto::ProvisionedKit& kit : kits) {
    spdlog::info("startup kit for {} ({}) written to {}", kit.name, crypto::RoleName(kit.role),
                 kit.directory.string());
  }
}

void AddParticipantOptions(CLI::App* command, ProvisionOptions* options) {
  command->add_option("--site", options->sites, "A site (data holder) to issue a kit for; repeat");
  command->add_option("--admin", options->admins, "An administrator to issue a kit for; repeat");
  command->add_option("--auditor", options->auditors, "An auditor to issue a kit for; repeat");
  command->add_option("--validity-days", options->validity_days,
                      "Validity of the participant certificates, in days")
      ->capture_default_str()
      ->check(CLI::Range(1, 36500));
}

int RunCreate(const ProvisionOptions& options) {
  if (options.federation.empty() || options.server_host.empty() || options.out.empty()) {
    spdlog::error(
        "provision: --federation, --server and --out are required to create a federation "
        "(or use `provision add` / `provision revoke`)");
    return 2;
  }
  crypto::FederationSpec spec;
  spec.federation = options.federation;
  spec.server_host = options.server_host;
  spec.server_port = static_cast<std::uint16_t>(options.server_port);
  spec.server_alt_names = options.server_alt_names;
  spec.participants = Participants(options);
  spec.ca_validity_days = options.ca_validity_days;
  spec.certificate_validity_days = options.validity_days;
  auto kits = crypto::ProvisionFederation(spec, options.out);
  if (!kits.ok()) return Fail(kits.status(), "failed");
  spdlog::info("federation {}: CA written to {}", options.federation,
               (std::filesystem::path(options.out) / crypto::kCaDirectoryName).string());
  ReportKits(*kits);
  return 0;
}

int RunAdd(const ProvisionOptions& options) {
  auto kits = crypto::AddParticipants(options.ca_dir, Participants(options), options.out,
                                      options.validity_days);
  if (!kits.ok()) return Fail(kits.status(), "add failed");
  ReportKits(*kits);
  return 0;
}

int RunRevoke(const ProvisionOptions& options) {
  auto crl = crypto::RevokeParticipant(options.ca_dir, options.name, options.server_kit);
  if (!crl.ok()) return Fail(crl.status(), "revoke failed");
  const std::string ca_crl = (std::filesystem::path(options.ca_dir) / "crl.pem").string();
  if (options.server_kit.empty()) {
    spdlog::info("revoked {}: CRL written to {}; copy it to the server kit's crl.pem", options.name,
                 ca_crl);
  } else {
    spdlog::info("revoked {}: CRL written to {} and to the server kit {} (crl.pem, crls/)",
                 options.name, ca_crl, options.server_kit);
  }
  return 0;
}

}  // namespace

void AddProvisionCommand(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<ProvisionOptions>();
  CLI::App* provision = app.add_subcommand(
      "provision", "Create the federation CA and per-participant startup kits (certificates, keys)");
  provision->add_option("--federation", options->federation, "Federation name");
  provision->add_option("--server", options->server_host,
                        "Host name or IP address that clients dial (goes into the server "
                        "certificate)");
  provision->add_option("--port", options->server_port, "Server port written to config.json")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  provision->add_option("--server-alt-name", options->server_alt_names,
                        "Another DNS name or IP address for the server certificate; repeat");
  AddParticipantOptions(provision, options.get());
  provision->add_option("--ca-validity-days", options->ca_validity_days,
                        "Validity of the CA certificate, in days")
      ->capture_default_str()
      ->check(CLI::Range(1, 36500));
  provision->add_option("--out", options->out, "Directory that receives ca/, server/ and one kit per participant");
  provision->require_subcommand(0, 1);

  CLI::App* add = provision->add_subcommand(
      "add", "Issue startup kits for more participants with an existing CA");
  add->add_option("--ca", options->ca_dir, "The CA directory (DIR/ca)")->required();
  AddParticipantOptions(add, options.get());
  add->add_option("--out", options->out, "Directory that receives the new kits")->required();
  add->callback([options, exit_code] { *exit_code = RunAdd(*options); });

  CLI::App* revoke = provision->add_subcommand(
      "revoke", "Revoke a participant's certificate by adding it to the CA's CRL");
  revoke->add_option("--ca", options->ca_dir, "The CA directory (DIR/ca)")->required();
  revoke->add_option("--name", options->name, "The participant to revoke")->required();
  revoke->add_option("--server-kit", options->server_kit,
                     "Also write the new CRL into this server kit (DIR/server)");
  revoke->callback([options, exit_code] { *exit_code = RunRevoke(*options); });

  // CLI11 runs this after a subcommand's callback; creation is the default action.
  provision->callback([provision, add, revoke, options, exit_code] {
    if (provision->got_subcommand(add) || provision->got_subcommand(revoke)) return;
    *exit_code = RunCreate(*options);
  });
}

}  // namespace cohort::cli
