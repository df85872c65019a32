// Fuzzes the audit log readers (audit::VerifyAuditChain, which drives
// audit::ChainVerifier line by line, and audit::ReadEntries) with the log written from the
// input. A mutated line almost never carries a valid Ed25519 signature or the hash of the
// line before it, so when the input's first byte is odd the harness repairs both, as a
// writer holding the key would: each `"prev":"<64 chars>"` becomes the hash of the line
// before, and each line that ends in a signature member is signed again with the
// harness's key. The entry parser and the checks after the signature are then what gets
// fuzzed. The log is the input without that first byte.
//
// Properties beyond "no crash, leak or hang": a log the verifier passes is one the reader
// reads whole, entry for entry.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "audit/entry.h"
#include "audit/reader.h"
#include "crypto/signing.h"
#include "fuzz/fuzz_scratch.h"

namespace {

using namespace cohort;

const crypto::SigningKey& HarnessKey() {
  static const crypto::SigningKey key = [] {
    std::array<uint8_t, crypto::kSigningSeedBytes> seed{};
    for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(i + 1);
    return *crypto::SigningKey::FromSeed(seed);
  }();
  return key;
}

// The line with its prev member pointing at `previous_hash` and, when it ends in a
// signature member, signed again.
std::string Repair(std::string_view line, const std::string& previous_hash) {
  std::string out(line);
  constexpr std::string_view kPrev = "\"prev\":\"";
  if (size_t at = out.find(kPrev); at != std::string::npos && at + kPrev.size() + 64 <= out.size()) {
    out.replace(at + kPrev.size(), 64, previous_hash);
  }
  absl::StatusOr<audit::SignedParts> parts = audit::SplitSignature(out);
  if (parts.ok()) {
    out = audit::AttachSignature(parts->unsigned_object,
                                 HarnessKey().Sign(absl::StrCat(audit::kEntrySignatureContext, parts->unsigned_object)));
  }
  return out;
}

std::string RepairLog(std::string_view log) {
  std::string out;
  std::string previous_hash = audit::kZeroHash;
  while (!log.empty()) {
    const size_t end = log.find('\n');
    if (end == std::string_view::npos) {  // a trailing partial line stays as it is
      out += log;
      break;
    }
    const std::string line = Repair(log.substr(0, end), previous_hash);
    previous_hash = audit::LineHash(line);
    out += line;
    out += '\n';
    log.remove_prefix(end + 1);
  }
  return out;
}

}  // namespace

// The readers log each repair and creation at info level: a line per input would slow the
// run and bury libFuzzer's own output.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::err);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view log = fuzz::AsText(data + 1, size - 1);
  const std::filesystem::path path = fuzz::ScratchDir() / "audit.log";
  fuzz::WriteWholeFile(path, (data[0] & 1) ? RepairLog(log) : std::string(log));

  absl::StatusOr<audit::ChainVerification> verified = audit::VerifyAuditChain(path, HarnessKey().public_key());
  if (!verified.ok()) fuzz::PropertyFailed(absl::StrCat("VerifyAuditChain failed to check: ", verified.status().message()));
  (void)verified->Summary();
  absl::StatusOr<audit::ReadResult> read = audit::ReadEntries(path);
  if (verified->ok()) {
    if (!read.ok()) {
      fuzz::PropertyFailed(absl::StrCat("a log that verifies does not read: ", read.status().message()));
    }
    if (read->entries.size() != verified->entry_count) {
      fuzz::PropertyFailed(absl::StrCat("a log that verifies with ", verified->entry_count, " entries reads as ",
                                        read->entries.size()));
    }
  }
  if (read.ok()) {
    for (const audit::Entry& entry : read->entries) (void)entry.target.ToString();
  }
  return 0;
}
