#pragma once
// The audit log entry format, shared by audit::Writer and the reader/verifier.
// This comment is its one definition; docs/audit.md explains how to use it.
//
// File: UTF-8 text, one entry per line, every line terminated by "\n" (0x0A); no
// header, no blank lines. A line is at most kMaxEntryLineBytes bytes with its "\n".
// A last line without "\n" is a partial write (a crash mid-append): it was never
// acknowledged, verifiers ignore it and say so, and the writer cuts it on open.
//
// Line: one compact JSON object (no whitespace outside strings), members in this
// order, all always present:
//
//   {"seq":3,"time":"2024-05-01T12:00:00.123Z","actor":"alice","role":"admin",
//    "action":"param.set","target":{"job":"mnist","parameter":"rounds"},
//    "old":10,"new":20,"reason":null,"prev":"<64 hex>","sig":"<128 hex>"}
//
//   seq     unsigned integer: 0 on the first line, +1 on each following line.
//   time    when the writer appended it: RFC 3339, UTC, milliseconds, exactly
//           "YYYY-MM-DDTHH:MM:SS.mmmZ".
//   actor   the identity that did or attempted the action (for example the
//           certificate identity of an admin or site, or "server").
//   role    the actor's role at that moment ("admin", "site", "server", ...).
//   action  dotted lowercase name ([a-z][a-z0-9_]* segments joined by "."), see
//           the constants in namespace `action` below.
//   target  an object with the optional string members "job", "parameter",
//           "participant" (in that order; absent when not applicable).
//   old     the state before the action, any JSON value, null if none. The whole line
//           nests at most core::kMaxJsonDepth (64) levels (core/limits.h).
//   new     the state after it (or what was asked, for a refusal), null if none.
//   reason  a string, or null.
//   prev    SHA-256, 64 lowercase hex, of the previous line's bytes INCLUDING its
//           terminating "\n"; 64 "0"s on seq 0. `sed -n 'Np' LOG | sha256sum`
//           prints line N's hash.
//   sig     Ed25519 signature, 128 lowercase hex, always the last member.
//
// Signed bytes: the 22 ASCII bytes "cohort.audit.entry.v1\n" followed by the line
// without its sig member, that is, the line's bytes up to (not including) its
// final `,"sig":"`, followed by "}". Every line therefore ends with exactly
// `,"sig":"` + 128 hex + `"}` + "\n". The signature covers the exact bytes that
// were written, so verifying needs no JSON canonicalisation, and changing any
// byte of a line other than the signature itself changes the signed bytes.
// Readers ignore members they do not know (the signature covers them too).
//
// Head hash: the SHA-256 (hex) of the last line including its "\n", which is the
// prev of the next entry; 64 "0"s for an empty log. Pinning (head hash, entry
// count) outside the server is what proves later that the log was not rewritten.

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/limits.h"
#include "crypto/signing.h"

namespace cohort::audit {

inline constexpr char kEntrySignatureContext[] = "cohort.audit.entry.v1\n";
inline constexpr std::size_t kMaxEntryLineBytes = core::kMaxAuditLineBytes;
inline constexpr char kZeroHash[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

// The actions the server records. Any name of the documented shape is accepted;
// these are the ones other components should use.
namespace action {
inline constexpr char kJobCreate[] = "job.create";
inline constexpr char kJobStart[] = "job.start";
inline constexpr char kJobStop[] = "job.stop";
inline constexpr char kJobEnd[] = "job.end";
inline constexpr char kParamSet[] = "param.set";
inline constexpr char kParamSetRefused[] = "param.set.refused";
inline constexpr char kModelPublish[] = "model.publish";
inline constexpr char kParticipantAdd[] = "participant.add";
inline constexpr char kParticipantRevoke[] = "participant.revoke";
inline constexpr char kParticipantJoin[] = "participant.join";
inline constexpr char kParticipantLost[] = "participant.lost";
inline constexpr char kParticipantDecline[] = "participant.decline";
inline constexpr char kPrivacySpend[] = "privacy.spend";
inline constexpr char kRoleChange[] = "role.change";
inline constexpr char kAccessDenied[] = "access.denied";
// Repeats of one access.denied (same actor, method and status code) within a window,
// counted and written as one entry (server/denial_aggregator.h).
inline constexpr char kAccessDeniedRepeated[] = "access.denied.repeated";
inline constexpr char kVerticalStart[] = "vertical.start";
inline constexpr char kVerticalPsi[] = "vertical.psi";
inline constexpr char kVerticalEpoch[] = "vertical.epoch";
// Every action above, once: docs/audit.md documents exactly these (a test compares the
// two), and the server's recorder refuses any other name.
inline constexpr const char* kAll[] = {kJobCreate,         kJobStart,         kJobStop,           kJobEnd,
                                       kParamSet,          kParamSetRefused,  kModelPublish,      kParticipantAdd,
                                       kParticipantRevoke, kParticipantJoin,  kParticipantLost,   kParticipantDecline,
                                       kPrivacySpend,      kRoleChange,       kAccessDenied,      kVerticalStart,
                                       kVerticalPsi,       kVerticalEpoch,    kAccessDeniedRepeated};
bool IsKnown(std::string_view action);
}  // namespace action

// What an entry is about. Empty members are not applicable and are not written.
struct Target {
  std::string job{};
  std::string parameter{};
  std::string participant{};

  // "job=mnist parameter=rounds", or "" when all members are empty.
  std::string ToString() const;
  friend bool operator==(const Target&, const Target&) = default;
};

// What the caller of Writer::Append states; the writer adds seq, time, prev, sig.
// (The "{}" initialisers let designated initialisers leave members out.)
struct Record {
  std::string actor{};
  std::string role{};
  std::string action{};
  Target target{};
  nlohmann::json old_value{};  // null when there is no previous state
  nlohmann::json new_value{};  // null when there is no new state
  std::optional<std::string> reason{};
};

// One entry as read back from a log.
struct Entry : Record {
  std::uint64_t seq = 0;
  std::string time;      // exactly as recorded
  absl::Time timestamp;  // `time`, parsed
  std::string prev;      // hex
  std::string sig;       // hex
  std::string line;      // the exact line bytes, without the "\n"
};

// "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC, truncated to milliseconds).
std::string FormatEntryTime(absl::Time time);
// Accepts exactly the form FormatEntryTime writes.
absl::StatusOr<absl::Time> ParseEntryTime(std::string_view text);

// True for dotted lowercase names such as "param.set.refused".
bool IsValidActionName(std::string_view action);

// SHA-256 hex of `line` followed by "\n": the hash the next entry's prev carries (the
// audit format's chain function for storage::AppendLog).
std::string LineHash(std::string_view line_without_newline);

// The entry without its sig member, as the compact JSON object text that is
// signed (after kEntrySignatureContext). Fails with InvalidArgument if the record
// breaks the format: empty actor, malformed action, strings that are not UTF-8, old
// or new nested so deep that the line would pass core::kMaxJsonDepth.
absl::StatusOr<std::string> EncodeUnsignedEntry(std::uint64_t seq, std::string_view time,
                                                const Record& record, std::string_view prev);

// Helpers for any JSON object whose last member is a "sig" signed over the object
// without it (entries here, export bundles in bundle.h).
//
// `unsigned_object` must be a compact JSON object text ending in "}". Returns the
// same object with `,"sig":"<hex>"` inserted before the closing brace.
std::string AttachSignature(std::string_view unsigned_object, const crypto::Signature& signature);
struct SignedParts {
  std::string unsigned_object;  // the text that was signed, without the context prefix
  crypto::Signature signature;
};
// The inverse of AttachSignature; fails if `text` does not end with a sig member
// in exactly that form.
absl::StatusOr<SignedParts> SplitSignature(std::string_view text);

// Checks the members of a parsed line and builds the Entry (without checking the
// signature or the chain). `line` is kept in Entry::line.
absl::StatusOr<Entry> EntryFromJson(const nlohmann::json& object, std::string_view line);
// Parses and checks one line (without "\n").
absl::StatusOr<Entry> ParseEntryLine(std::string_view line);

}  // namespace cohort::audit
