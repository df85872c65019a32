#include "audit/chain.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"

namespace cohort::audit {
namespace {

// Debian's abseil keeps its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), which std::string_view does not convert to; absl::StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// "1 entry", "5 entries".
std::string Entries(std::uint64_t count) {
  return absl::StrCat(count, count == 1 ? " entry" : " entries");
}

std::string Short(std::string_view hash) { return absl::StrCat(Av(hash.substr(0, 16)), "..."); }

}  // namespace

std::string_view ChainProblemName(ChainProblem problem) {
  switch (problem) {
    case ChainProblem::kBadJson:
      return "bad JSON";
    case ChainProblem::kMalformedEntry:
      return "malformed entry";
    case ChainProblem::kLineTooLong:
      return "line too long";
    case ChainProblem::kBadSignature:
      return "signature invalid";
    case ChainProblem::kPrevMismatch:
      return "prev hash mismatch";
    case ChainProblem::kSeqMismatch:
      return "seq gap";
    case ChainProblem::kCountShort:
      return "entry count below the pinned count";
    case ChainProblem::kHeadMismatch:
      return "head hash not as pinned";
  }
  return "unknown problem";
}

std::string ChainVerification::Summary() const {
  if (failure.has_value()) {
    std::string where = absl::StrCat("line ", failure->line);
    if (failure->seq.has_value()) absl::StrAppend(&where, " (seq ", *failure->seq, ")");
    return absl::StrCat("invalid at ", where, ": ", Av(ChainProblemName(failure->problem)), ": ",
                        failure->detail, " [", Entries(entry_count), " before it verified]");
  }
  if (trailing_partial_line) {
    const std::string verified = entry_count == 0
                                     ? std::string("verified 0 entries")
                                     : absl::StrCat("verified up to entry ", entry_count - 1);
    return absl::StrCat(verified, "; trailing partial line ignored (line ", entry_count + 1, ", ",
                        trailing_partial_bytes, " bytes without a newline); ", Entries(entry_count),
                        ", head ", head_hash);
  }
  return absl::StrCat("valid: ", Entries(entry_count), ", head ", head_hash);
}

ChainVerifier::ChainVerifier(crypto::SigningPublicKey key, ChainExpectations expect)
    : key_(std::move(key)), expect_(std::move(expect)) {
  pinned_head_seen_ = expect_.head.has_value() && *expect_.head == kZeroHash;
}

bool ChainVerifier::Fail(ChainProblem problem, std::optional<std::uint64_t> seq,
                         std::string detail) {
  result_.failure = ChainFailure{line_number_, seq, problem, std::move(detail)};
  return false;
}

bool ChainVerifier::AddLine(std::string_view line) {
  if (result_.failure.has_value()) return false;
  ++line_number_;
  const std::uint64_t expected_seq = result_.entry_count;

  // Bounded first: a line nested 100,000 deep parses, then overflows the stack when
  // EntryFromJson copies or prints a member of it.
  if (absl::Status s = core::CheckJsonBounds(line, core::kAuditLineJson, "the entry"); !s.ok()) {
    return Fail(ChainProblem::kBadJson, std::nullopt, std::string(s.message()));
  }
  const nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) {
    return Fail(ChainProblem::kBadJson, std::nullopt,
                "the line is not valid JSON (bytes changed, or not an audit log)");
  }
  std::optional<std::uint64_t> seq;
  if (object.is_object() && object.contains("seq") && object["seq"].is_number_unsigned()) {
    seq = object["seq"].get<std::uint64_t>();
  }
  absl::StatusOr<Entry> entry = EntryFromJson(object, line);
  if (!entry.ok())
    return Fail(ChainProblem::kMalformedEntry, seq, std::string(entry.status().message()));
  absl::StatusOr<SignedParts> parts = SplitSignature(line);
  if (!parts.ok())
    return Fail(ChainProblem::kMalformedEntry, seq, std::string(parts.status().message()));

  if (!key_.Verify(absl::StrCat(kEntrySignatureContext, parts->unsigned_object),
                   parts->signature)) {
    return Fail(ChainProblem::kBadSignature, seq,
                absl::StrCat("the signature does not verify under public key ", key_.ToHex(),
                             ": the entry was modified, or signed with another key"));
  }
  if (entry->prev != result_.head_hash) {
    std::string detail;
    if (line_number_ == 1) {
      detail = absl::StrCat("the first entry must have prev = 64 zeros, found ", Short(entry->prev),
                            ": entries were removed from the start");
    } else {
      detail = absl::StrCat("prev is ", Short(entry->prev), " but line ", line_number_ - 1,
                            " hashes to ", Short(result_.head_hash),
                            ": an entry was deleted, inserted or moved before this line");
    }
    if (entry->seq != expected_seq) {
      absl::StrAppend(&detail, " (expected seq ", expected_seq, " here, found ", entry->seq, ")");
    }
    return Fail(ChainProblem::kPrevMismatch, entry->seq, std::move(detail));
  }
  if (entry->seq != expected_seq) {
    return Fail(ChainProblem::kSeqMismatch, entry->seq,
                absl::StrCat("expected seq ", expected_seq, ", found ", entry->seq));
  }

  result_.head_hash = LineHash(line);
  ++result_.entry_count;
  result_.verified_bytes += line.size() + 1;

  if (expect_.head.has_value()) {
    if (expect_.count.has_value()) {
      if (result_.entry_count == *expect_.count && result_.head_hash != *expect_.head) {
        return Fail(
            ChainProblem::kHeadMismatch, entry->seq,
            absl::StrCat("line ", line_number_, " (entry ", *expect_.count,
                         " of the pinned count) hashes to ", result_.head_hash, ", pinned head is ",
                         *expect_.head, ": the log was rewritten up to here"));
      }
    } else if (result_.head_hash == *expect_.head) {
      pinned_head_seen_ = true;
    }
  }
  return true;
}

void ChainVerifier::AddLineTooLong() {
  if (result_.failure.has_value()) return;
  ++line_number_;
  Fail(ChainProblem::kLineTooLong, std::nullopt,
       absl::StrCat("expected at most ", kMaxEntryLineBytes, " bytes per line"));
}

void ChainVerifier::AddTrailingPartialLine(std::uint64_t bytes) {
  result_.trailing_partial_line = true;
  result_.trailing_partial_bytes = bytes;
}

ChainVerification ChainVerifier::Finish() {
  if (!result_.failure.has_value()) {
    const std::uint64_t count = result_.entry_count;
    line_number_ = count + 1;  // where the missing entries would start
    if (expect_.count.has_value() && count < *expect_.count) {
      Fail(ChainProblem::kCountShort, count,
           absl::StrCat("pinned count is ", Entries(*expect_.count), ", the log has ", count,
                        ": entries were cut from the end"));
    } else if (expect_.count.has_value() && *expect_.count == 0 && expect_.head.has_value() &&
               *expect_.head != kZeroHash) {
      Fail(ChainProblem::kHeadMismatch, std::nullopt,
           absl::StrCat("a pinned count of 0 entries has head ", kZeroHash, ", pinned head is ",
                        *expect_.head));
    } else if (expect_.head.has_value() && !expect_.count.has_value() && !pinned_head_seen_) {
      Fail(ChainProblem::kHeadMismatch, count,
           absl::StrCat("no line hashes to the pinned head ", *expect_.head, " (log head is ",
                        result_.head_hash,
                        "): entries were cut from the end, or the log was rewritten"));
    }
  }
  return std::move(result_);
}

}  // namespace cohort::audit
