#include "audit/reader.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "storage/line_reader.h"

namespace cohort::audit {
namespace {

using storage::LineReader;

// Debian's abseil keeps its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), which std::string_view does not convert to; absl::StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::StatusOr<std::string> ParseHeadHash(std::string_view text) {
  std::string hash = absl::AsciiStrToLower(absl::StripAsciiWhitespace(Av(text)));
  bool hex = hash.size() == 64;
  for (char c : hash) hex = hex && absl::ascii_isxdigit(static_cast<unsigned char>(c));
  if (!hex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head hash \"", Av(text), "\": expected 64 hex characters (a SHA-256 from the server)"));
  }
  return hash;
}

absl::StatusOr<ChainExpectations> PinnedExpectations(std::optional<std::string> expected_head,
                                                     std::optional<std::uint64_t> expected_count) {
  ChainExpectations expect;
  if (expected_head.has_value()) {
    absl::StatusOr<std::string> head = ParseHeadHash(*expected_head);
    if (!head.ok()) return head.status();
    expect.head = *std::move(head);
  }
  expect.count = expected_count;
  return expect;
}

absl::StatusOr<ChainVerification> VerifyAuditChain(const std::filesystem::path& path,
                                                   const crypto::SigningPublicKey& key,
                                                   std::optional<std::string> expected_head,
                                                   std::optional<std::uint64_t> expected_count) {
  absl::StatusOr<ChainExpectations> expect = PinnedExpectations(std::move(expected_head), expected_count);
  if (!expect.ok()) return expect.status();
  return VerifyAuditChainLines(path, key, *std::move(expect), nullptr);
}

absl::StatusOr<ChainVerification> VerifyAuditChainLines(
    const std::filesystem::path& path, const crypto::SigningPublicKey& key,
    ChainExpectations expect, const std::function<void(std::string_view)>& on_verified_line) {
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(path, kMaxEntryLineBytes);
  if (!reader.ok()) return reader.status();
  ChainVerifier verifier(key, std::move(expect));
  std::string line;
  while (true) {
    absl::StatusOr<LineReader::Next> next = (*reader)->Read(&line);
    if (!next.ok()) return next.status();
    if (*next == LineReader::Next::kEnd) break;
    if (*next == LineReader::Next::kPartial) {
      verifier.AddTrailingPartialLine(line.size());
      break;
    }
    if (*next == LineReader::Next::kTooLong) {
      verifier.AddLineTooLong();
      break;
    }
    if (!verifier.AddLine(line)) break;
    if (on_verified_line) on_verified_line(line);
  }
  return verifier.Finish();
}

absl::StatusOr<ReadResult> ReadEntries(const std::filesystem::path& path,
                                       const EntryFilter& filter) {
  absl::StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(path, kMaxEntryLineBytes);
  if (!reader.ok()) return reader.status();
  ReadResult result;
  std::string line;
  for (std::uint64_t line_number = 1;; ++line_number) {
    absl::StatusOr<LineReader::Next> next = (*reader)->Read(&line);
    if (!next.ok()) return next.status();
    switch (*next) {
      case LineReader::Next::kEnd:
        return result;
      case LineReader::Next::kPartial:
        result.trailing_partial_line = true;
        return result;
      case LineReader::Next::kTooLong:
        return absl::DataLossError(absl::StrCat(path.string(), " line ", line_number,
                                                ": longer than ", kMaxEntryLineBytes, " bytes"));
      case LineReader::Next::kLine:
        break;
    }
    absl::StatusOr<Entry> entry = ParseEntryLine(line);
    if (!entry.ok()) {
      return absl::DataLossError(
          absl::StrCat(path.string(), " line ", line_number, ": ", entry.status().message()));
    }
    if (filter.Matches(*entry)) result.entries.push_back(*std::move(entry));
  }
}

}  // namespace cohort::audit
