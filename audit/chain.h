#pragma once
// Verification of an audit chain (the format in audit/entry.h), one line at a
// time, so that a log file and the lines inside an export bundle are checked by
// the same code. Most callers want VerifyAuditChain in audit/reader.h.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "audit/entry.h"
#include "crypto/signing.h"

namespace cohort::audit {

// Why a chain is not valid. Each check runs in this order on every line, so the
// first one that fails names the cause.
enum class ChainProblem {
  kBadJson,         // the line is not JSON (bytes changed or garbage written)
  kMalformedEntry,  // JSON, but a member is missing or of the wrong form
  kLineTooLong,     // longer than kMaxEntryLineBytes
  kBadSignature,    // the signature does not verify: entry modified, or signed by another key
  kPrevMismatch,    // prev is not the hash of the line before: entries deleted, inserted or
                    // reordered before this line
  kSeqMismatch,     // prev matches but seq is not the previous seq + 1
  kCountShort,      // fewer entries than the pinned count: entries cut from the end
  kHeadMismatch,    // the pinned head hash is not where it should be: cut or rewritten
};

// Short fixed text for each problem, e.g. "signature invalid".
std::string_view ChainProblemName(ChainProblem problem);

struct ChainFailure {
  std::uint64_t line = 0;            // 1-based line number of the first bad entry
  std::optional<std::uint64_t> seq;  // the seq of that entry, when it could be read
  ChainProblem problem = ChainProblem::kBadJson;
  std::string detail;  // what was found and what was expected
};

// Pins taken earlier from a trusted copy (for example the server's status API).
// A log that has grown since still passes: it must contain at least `count`
// entries, and the hash of line `count` must be `head`. With only `head`, some
// line of the log must hash to it (the zero hash matches the empty prefix).
struct ChainExpectations {
  std::optional<std::string> head;  // 64 lowercase hex
  std::optional<std::uint64_t> count;
};

struct ChainVerification {
  std::uint64_t entry_count = 0;       // whole entries verified (all before any failure)
  std::string head_hash{kZeroHash};    // hash of the last verified line
  std::uint64_t verified_bytes = 0;    // length of the verified prefix, "\n"s included
  bool trailing_partial_line = false;  // the file ends with bytes that have no "\n"
  std::uint64_t trailing_partial_bytes = 0;
  std::optional<ChainFailure> failure;  // the first failure; empty when valid

  bool ok() const { return !failure.has_value(); }
  // One line for people, e.g. "valid: 12 entries, head 3f...",
  // "verified up to entry 11; trailing partial line ignored (line 13, ...); 12 entries, head ...",
  // "invalid at line 5 (seq 4): signature invalid: ...".
  std::string Summary() const;
};

class ChainVerifier {
 public:
  explicit ChainVerifier(crypto::SigningPublicKey key, ChainExpectations expect = {});

  // Checks the next whole line (given without its "\n"). Returns false once the
  // chain has failed; later calls change nothing.
  bool AddLine(std::string_view line);
  // The next line is longer than kMaxEntryLineBytes.
  void AddLineTooLong();
  // The file ends with `bytes` bytes that have no "\n".
  void AddTrailingPartialLine(std::uint64_t bytes);

  // Applies the pins and returns the result.
  ChainVerification Finish();

 private:
  bool Fail(ChainProblem problem, std::optional<std::uint64_t> seq, std::string detail);

  crypto::SigningPublicKey key_;
  ChainExpectations expect_;
  ChainVerification result_;
  std::uint64_t line_number_ = 0;
  bool pinned_head_seen_ = false;
};

}  // namespace cohort::audit
