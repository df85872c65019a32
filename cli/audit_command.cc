// `cohort audit`: verify, read, export and key the signed audit log.
//
//   cohort audit verify LOG --key PUB [--expect-head HASH] [--expect-count N]
//   cohort audit verify-bundle BUNDLE --key PUB [--expect-head HASH] [--expect-count N]
//   cohort audit show LOG [--actor A] [--action X] [--job J] [--parameter P]
//                         [--participant S] [--since T] [--until T] [--json] [--key PUB]
//   cohort audit export LOG --key PRIV --out BUNDLE
//   cohort audit keygen --out DIR
//
// Exit codes: 0 valid / done, 1 the log or bundle does not verify or the
// operation failed, 2 bad input (missing file, unreadable key, malformed flag).
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "audit/bundle.h"
#include "audit/filter.h"
#include "audit/reader.h"
#include "audit/table.h"
#include "cli/commands.h"
#include "crypto/signing.h"

namespace cohort::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitBadInput = 2;

// Problems with what the user gave us are bad input; anything else is a failure.
int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kAlreadyExists:
      return kExitBadInput;
    default:
      return kExitFailed;
  }
}

int ReportError(const absl::Status& status) {
  std::cerr << "cohort audit: " << status.message() << "\n";
  return ExitCodeFor(status);
}

struct PinOptions {
  std::string head;
  std::uint64_t count = 0;
  CLI::Option* head_option = nullptr;
  CLI::Option* count_option = nullptr;

  void AddTo(CLI::App* command) {
    head_option = command->add_option(
        "--expect-head", head,
        "head hash pinned earlier (server status API); the log must pass through it");
    count_option =
        command->add_option("--expect-count", count,
                            "entry count pinned earlier; the log must have at least this many");
  }
  std::optional<std::string> expected_head() const {
    return head_option->count() > 0 ? std::optional<std::string>(head) : std::nullopt;
  }
  std::optional<std::uint64_t> expected_count() const {
    return count_option->count() > 0 ? std::optional<std::uint64_t>(count) : std::nullopt;
  }
};

struct VerifyArgs {
  std::string path;
  std::string key_path;
  PinOptions pins;
};

int RunVerify(const VerifyArgs& args) {
  absl::StatusOr<crypto::SigningPublicKey> key = crypto::ReadPublicKeyFile(args.key_path);
  if (!key.ok()) return ReportError(key.status());
  absl::StatusOr<audit::ChainVerification> result = audit::VerifyAuditChain(
      args.path, *key, args.pins.expected_head(), args.pins.expected_count());
  if (!result.ok()) return ReportError(result.status());
  if (!result->ok()) {
    std::cout << "INVALID " << args.path << ": " << result->Summary() << "\n";
    return kExitFailed;
  }
  std::cout << "OK " << args.path << ": " << result->Summary() << "\n";
  std::cout << "pin: --expect-count " << result->entry_count << " --expect-head "
            << result->head_hash << "\n";
  return kExitOk;
}

int RunVerifyBundle(const VerifyArgs& args) {
  absl::StatusOr<crypto::SigningPublicKey> key = crypto::ReadPublicKeyFile(args.key_path);
  if (!key.ok()) return ReportError(key.status());
  absl::StatusOr<audit::BundleVerification> result = audit::VerifyAuditBundle(
      args.path, *key, args.pins.expected_head(), args.pins.expected_count());
  if (!result.ok()) return ReportError(result.status());
  std::cout << (result->ok() ? "OK " : "INVALID ") << args.path << ": " << result->Summary()
            << "\n";
  return result->ok() ? kExitOk : kExitFailed;
}

struct ShowArgs {
  std::string path;
  std::string actor, action, job, parameter, participant, since, until, key_path;
  bool json = false;
};

int RunShow(const ShowArgs& args, const CLI::App& command) {
  audit::EntryFilter filter;
  auto set = [&command](const char* flag, const std::string& value,
                        std::optional<std::string>* field) {
    if (command.count(flag) > 0) *field = value;
  };
  set("--actor", args.actor, &filter.actor);
  set("--action", args.action, &filter.action);
  set("--job", args.job, &filter.job);
  set("--parameter", args.parameter, &filter.parameter);
  set("--participant", args.participant, &filter.participant);
  for (const auto& [flag, text, bound] : {std::tuple{"--since", &args.since, &filter.since},
                                          std::tuple{"--until", &args.until, &filter.until}}) {
    if (command.count(flag) == 0) continue;
    absl::StatusOr<absl::Time> time = audit::ParseTimeBound(*text);
    if (!time.ok()) {
      return ReportError(absl::InvalidArgumentError(std::string(flag) + ": " +
                                                    std::string(time.status().message())));
    }
    *bound = *time;
  }

  if (command.count("--key") > 0) {
    absl::StatusOr<crypto::SigningPublicKey> key = crypto::ReadPublicKeyFile(args.key_path);
    if (!key.ok()) return ReportError(key.status());
    absl::StatusOr<audit::ChainVerification> verified = audit::VerifyAuditChain(args.path, *key);
    if (!verified.ok()) return ReportError(verified.status());
    if (!verified->ok()) {
      std::cerr << "cohort audit: " << args.path
                << " does not verify, not showing it: " << verified->Summary() << "\n";
      return kExitFailed;
    }
  }

  absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(args.path, filter);
  if (!read.ok()) return ReportError(read.status());
  if (args.json) {
    for (const audit::Entry& entry : read->entries) std::cout << entry.line << "\n";
  } else {
    std::cout << audit::FormatEntryTable(read->entries);
  }
  if (read->trailing_partial_line) {
    std::cerr << "cohort audit: " << args.path
              << " ends with a partial line (an interrupted append); it was skipped\n";
  }
  return kExitOk;
}

struct ExportArgs {
  std::string path, key_path, out_path;
};

int RunExport(const ExportArgs& args) {
  absl::StatusOr<crypto::SigningKey> key = crypto::ReadSigningKeyFile(args.key_path);
  if (!key.ok()) return ReportError(key.status());
  absl::StatusOr<audit::ExportSummary> summary =
      audit::ExportAuditBundle(args.path, *key, args.out_path);
  if (!summary.ok()) {
    // A log that does not verify is a failed operation, not bad input.
    if (summary.status().code() == absl::StatusCode::kFailedPrecondition) {
      std::cerr << "cohort audit: " << summary.status().message() << "\n";
      return kExitFailed;
    }
    return ReportError(summary.status());
  }
  std::cout << "exported " << summary->entry_count << " entries (head " << summary->head_hash
            << ") to " << args.out_path << " at " << summary->exported_at << "\n";
  if (summary->skipped_partial_line) {
    std::cerr << "cohort audit: the log's trailing partial line was not exported\n";
  }
  return kExitOk;
}

int RunKeygen(const std::string& dir) {
  const std::filesystem::path key_path = std::filesystem::path(dir) / "audit.key";
  const std::filesystem::path pub_path = std::filesystem::path(dir) / "audit.pub";
  std::error_code error;
  if (!std::filesystem::exists(dir, error)) {
    std::filesystem::create_directories(dir, error);
    if (error) {
      return ReportError(
          absl::PermissionDeniedError(dir + ": cannot create directory: " + error.message()));
    }
    // Only the server's account needs to read the private key.
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, error);
  }
  for (const auto& path : {key_path, pub_path}) {
    if (std::filesystem::exists(path, error)) {
      return ReportError(absl::AlreadyExistsError(
          path.string() + ": already exists; refusing to replace an audit key"));
    }
  }
  const crypto::SigningKey key = crypto::SigningKey::Generate();
  if (absl::Status s = crypto::WriteSigningKeyFile(key_path, key); !s.ok()) return ReportError(s);
  if (absl::Status s = crypto::WritePublicKeyFile(pub_path, key.public_key()); !s.ok()) {
    return ReportError(s);
  }
  std::cout << "wrote " << key_path.string() << " (private, mode 0600) and " << pub_path.string()
            << "\npublic key: " << key.public_key().ToHex() << "\n";
  return kExitOk;
}

}  // namespace

void AddAuditCommand(CLI::App& app, int* exit_code) {
  CLI::App* audit = app.add_subcommand("audit", "Verify, read and export the signed audit log");
  audit->require_subcommand(1);

  {
    auto args = std::make_shared<VerifyArgs>();
    CLI::App* verify = audit->add_subcommand(
        "verify",
        "Check every entry's signature and the hash chain; exit 1 naming the first bad "
        "entry");
    verify->add_option("log", args->path, "audit log file")->required();
    verify->add_option("--key", args->key_path, "audit public key file (hex)")->required();
    args->pins.AddTo(verify);
    verify->callback([args, exit_code] { *exit_code = RunVerify(*args); });
  }
  {
    auto args = std::make_shared<VerifyArgs>();
    CLI::App* verify = audit->add_subcommand(
        "verify-bundle", "Check an export bundle's signature and the entries inside it");
    verify->add_option("bundle", args->path, "bundle written by `cohort audit export`")->required();
    verify->add_option("--key", args->key_path, "audit public key file (hex)")->required();
    args->pins.AddTo(verify);
    verify->callback([args, exit_code] { *exit_code = RunVerifyBundle(*args); });
  }
  {
    auto args = std::make_shared<ShowArgs>();
    CLI::App* show = audit->add_subcommand("show", "Print entries as a table or as JSON lines");
    show->add_option("log", args->path, "audit log file")->required();
    show->add_option("--actor", args->actor, "only entries by this identity");
    show->add_option("--action", args->action,
                     "only this action, e.g. param.set, or a family such as participant.*");
    show->add_option("--job", args->job, "only entries about this job");
    show->add_option("--parameter", args->parameter, "only entries about this parameter");
    show->add_option("--participant", args->participant, "only entries about this participant");
    show->add_option("--since", args->since,
                     "only entries at or after this time (RFC 3339 or date)");
    show->add_option("--until", args->until, "only entries before this time (RFC 3339 or date)");
    show->add_flag("--json", args->json, "print the matching log lines as they are");
    show->add_option("--key", args->key_path, "verify the log with this public key first");
    show->callback([args, show, exit_code] { *exit_code = RunShow(*args, *show); });
  }
  {
    auto args = std::make_shared<ExportArgs>();
    CLI::App* export_command =
        audit->add_subcommand("export", "Write a signed archival bundle of the verified log");
    export_command->add_option("log", args->path, "audit log file")->required();
    export_command->add_option("--key", args->key_path, "audit private key file")->required();
    export_command->add_option("--out", args->out_path, "bundle file to create")->required();
    export_command->callback([args, exit_code] { *exit_code = RunExport(*args); });
  }
  {
    auto dir = std::make_shared<std::string>();
    CLI::App* keygen = audit->add_subcommand(
        "keygen", "Create the server's audit key pair: DIR/audit.key (0600) and DIR/audit.pub");
    keygen->add_option("--out", *dir, "directory for the key files")->required();
    keygen->callback([dir, exit_code] { *exit_code = RunKeygen(*dir); });
  }
}

}  // namespace cohort::cli
