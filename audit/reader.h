#pragma once
// Reading and verifying an audit log written by audit::Writer (format in
// audit/entry.h). Both read the file as it is; neither changes it.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "audit/chain.h"
#include "audit/entry.h"
#include "audit/filter.h"
#include "crypto/signing.h"

namespace cohort::audit {

// Checks every line of the log at `path` (JSON, members, signature under `key`,
// prev chain, seq) and then the pins, and names the first bad entry. A last line
// without "\n" is reported as a trailing partial line, not as a failure.
//
// An error status means the input could not be checked at all: the file is
// missing (NotFound) or unreadable, or `expected_head` is not 64 hex characters
// (InvalidArgument). A log that fails verification is an OK status whose
// ChainVerification has `failure` set.
absl::StatusOr<ChainVerification> VerifyAuditChain(
    const std::filesystem::path& path, const crypto::SigningPublicKey& key,
    std::optional<std::string> expected_head = std::nullopt,
    std::optional<std::uint64_t> expected_count = std::nullopt);

// VerifyAuditChain with the pins given as ChainExpectations, which also hands
// every line that verified (without its "\n") to `on_verified_line`, in order:
// one read of the file yields both the verdict and exactly the lines it covers.
absl::StatusOr<ChainVerification> VerifyAuditChainLines(
    const std::filesystem::path& path, const crypto::SigningPublicKey& key,
    ChainExpectations expect, const std::function<void(std::string_view)>& on_verified_line);

struct ReadResult {
  std::vector<Entry> entries;          // matching entries, in log order
  bool trailing_partial_line = false;  // a last line without "\n" was skipped
};

// The entries of the log at `path` that match `filter`. Checks the form of every
// line but not signatures or the chain: run VerifyAuditChain for that. Fails with
// DataLoss naming the line when a line is not a well-formed entry.
absl::StatusOr<ReadResult> ReadEntries(const std::filesystem::path& path,
                                       const EntryFilter& filter = {});

// Normalises a pinned head hash typed by a person: 64 hex characters, either
// case, returned in lowercase.
absl::StatusOr<std::string> ParseHeadHash(std::string_view text);

// The pins a person gave (a head hash as typed, an entry count) as ChainExpectations.
absl::StatusOr<ChainExpectations> PinnedExpectations(std::optional<std::string> expected_head,
                                                     std::optional<std::uint64_t> expected_count);

}  // namespace cohort::audit
