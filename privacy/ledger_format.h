#pragma once
// The privacy ledger file format, shared by the writer and the reader
// (privacy::Ledger does both). One file per site; UTF-8 JSON lines: each line
// is one JSON object with no raw newline inside, terminated by one '\n'.
//
//   line 1, the header:
//     {"kind":"header","version":1,"site":"<site>",
//      "budget":{"epsilon":<double>,"delta":<double>},
//      "accountant":"rdp-poisson-gaussian/v1","created":"<RFC 3339 UTC>",
//      "prev":"<64 hex zeros>"}
//   line n >= 2, one spend each:
//     {"kind":"spend","seq":<n-1>,"time":"<RFC 3339 UTC>","job":"<job>",
//      "round":<int>,"mechanism":"dp-sgd"|"client-dp",
//      "parameters":{"q":<double>,"sigma":<double>,"steps":<int>,
//                    "clip":<double>},
//      "epsilon_after":<double>,"delta":<double>,"prev":"<64 hex>"}
//
// "prev" is the lowercase hex SHA-256 of the previous line's exact bytes
// (without its '\n'); the header's is 64 zeros. "epsilon_after" is the
// epsilon of all spends up to and including this one, composed with the RDP
// accountant at the header's delta; "delta" repeats the header's. Doubles are
// written with enough digits to read back exactly, so replaying the
// parameters reproduces every epsilon_after bit for bit. Keys appear in the
// order above; readers do not depend on it (the hash covers the bytes as
// written, whatever the order).
//
// The guarantees built on this format (durability, tamper evidence, crash
// recovery) are stated in privacy/ledger.h; the long form is docs/privacy.md.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/limits.h"
#include "privacy/budget.h"

namespace cohort::privacy {

enum class Mechanism {
  kDpSgd,     // example-level DP-SGD on the site's data ("dp-sgd")
  kClientDp,  // client-level DP of a federated round ("client-dp")
};

// "dp-sgd" / "client-dp".
std::string_view MechanismName(Mechanism mechanism);

// One planned or recorded spend: `steps` compositions of the Poisson-
// subsampled Gaussian mechanism at (q, sigma), contributions clipped to
// clip_norm (recorded for audit; epsilon does not depend on it).
struct SpendRequest {
  std::string job;    // non-empty UTF-8
  int64_t round = 0;  // >= 0
  Mechanism mechanism = Mechanism::kDpSgd;
  double sampling_rate = 0.0;     // q in (0, 1]
  double noise_multiplier = 0.0;  // sigma > 0
  int64_t steps = 0;              // >= 1
  double clip_norm = 0.0;         // > 0
};

// InvalidArgument naming the field ("steps: expected an integer >= 1, got 0").
absl::Status ValidateSpendRequest(const SpendRequest& request);
// Non-empty, valid UTF-8.
absl::Status ValidateText(std::string_view text, std::string_view key);

namespace ledger_format {

inline constexpr int kVersion = 1;
inline constexpr char kAccountantName[] = "rdp-poisson-gaussian/v1";

// The "prev" of the header.
std::string ZeroHash();
// Lowercase hex SHA-256 of `line` (without its '\n'): the ledger format's chain
// function for storage::AppendLog.
std::string HashLine(std::string_view line);
// The longest line a ledger holds, '\n' included; a longer one is refused.
inline constexpr std::size_t kMaxLineBytes = core::kLedgerLineJson.max_bytes;
// Now, as "2024-05-01T12:00:00.123Z".
std::string NowRfc3339();

struct Header {
  std::string site;
  PrivacyBudget budget;
  std::string created;
  std::string prev;
};

struct SpendEntry {
  int64_t seq = 0;
  std::string time;
  SpendRequest request;
  double epsilon_after = 0.0;
  double delta = 0.0;
  std::string prev;
};

// One line each, without the '\n'. Text fields must be valid UTF-8
// (invalid bytes would be replaced, breaking the round trip).
std::string EncodeHeader(const Header& header);
std::string EncodeSpend(const SpendEntry& entry);

// Parse one line. DataLoss with a reason that does not name the file or line
// (the caller adds those): not JSON, wrong kind, missing or mistyped field,
// unsupported version, invalid parameter values.
absl::StatusOr<Header> ParseHeader(std::string_view line);
absl::StatusOr<SpendEntry> ParseSpend(std::string_view line);

// A JSON string literal for `text`, for log lines: quotes and escapes keep
// one event on one line whatever the text holds.
std::string QuotedForLog(std::string_view text);

}  // namespace ledger_format
}  // namespace cohort::privacy
