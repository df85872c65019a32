#pragma once
// Signed archival bundles of an audit log: `cohort audit export` writes one,
// `cohort audit verify-bundle` checks one.
//
// Bundle file: one compact JSON object followed by "\n", members in this order:
//
//   {"format":"cohort.audit.bundle.v1","exported_at":"2024-05-01T12:00:00.123Z",
//    "source":"audit.log","public_key":"<64 hex>","entry_count":12,
//    "head_hash":"<64 hex>","lines":["<line 1>","<line 2>",...],"sig":"<128 hex>"}
//
//   format       always "cohort.audit.bundle.v1".
//   exported_at  export time, same form as an entry's time.
//   source       file name (not the path) of the exported log.
//   public_key   the key that signed the entries and the bundle (informational:
//                verifiers use the key they were given, never this one).
//   entry_count  number of lines; head_hash the hash of the last (entry.h).
//   lines        the log's whole lines, byte for byte, without their "\n".
//   sig          Ed25519 signature by the log's own key over the 23 ASCII bytes
//                "cohort.audit.bundle.v1\n" followed by the object without its sig
//                member (its bytes up to the final `,"sig":"`, then "}"), the same
//                rule as for entries.
//
// Each line keeps its own entry signature and prev hash, so a bundle is verified
// twice over: the bundle signature (nothing was added or removed after export)
// and the chain inside it (the entries are the ones the server wrote).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "audit/chain.h"
#include "crypto/signing.h"

namespace cohort::audit {

inline constexpr char kBundleFormat[] = "cohort.audit.bundle.v1";
inline constexpr char kBundleSignatureContext[] = "cohort.audit.bundle.v1\n";

struct ExportSummary {
  std::uint64_t entry_count = 0;
  std::string head_hash;
  std::string exported_at;
  bool skipped_partial_line = false;  // the log ended with a partial line, not exported
};

// Verifies the log at `log_path` with key.public_key() and writes its whole
// entries as a bundle to `out_path` (atomically; an existing file is never
// replaced: AlreadyExists). A log that does not verify is not exported
// (FailedPrecondition, with the verifier's summary).
absl::StatusOr<ExportSummary> ExportAuditBundle(const std::filesystem::path& log_path,
                                                const crypto::SigningKey& key,
                                                const std::filesystem::path& out_path,
                                                absl::Time now = absl::Now());

struct BundleVerification {
  // A problem with the bundle itself (not a bundle, bad bundle signature, the
  // declared count or head disagreeing with its lines); empty when it is sound.
  std::optional<std::string> bundle_failure;
  ChainVerification chain;  // the entries inside, checked as a log
  std::string exported_at;
  std::string source;

  bool ok() const { return !bundle_failure.has_value() && chain.ok(); }
  std::string Summary() const;
};

// Checks the bundle at `path` under `key`, then its entries as a chain with the
// given pins. As with VerifyAuditChain, an error status means the input could not
// be checked (missing file, malformed pin); an invalid bundle is an OK status
// with ok() false.
absl::StatusOr<BundleVerification> VerifyAuditBundle(
    const std::filesystem::path& path, const crypto::SigningPublicKey& key,
    std::optional<std::string> expected_head = std::nullopt,
    std::optional<std::uint64_t> expected_count = std::nullopt);

}  // namespace cohort::audit
