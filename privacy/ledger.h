#pragma once
// privacy::Ledger: a site's record of every privacy spend on its data, on
// disk, append-only and tamper-evident. A site opens its ledger at start-up
// (refusing to start if it is corrupt), asks CanSpend before accepting a
// task, and records the spend with RecordSpend *before* it trains: a spend
// that is not durable on disk never authorises training.
//
// File format: privacy/ledger_format.h (one JSON line per entry, a header
// then one line per spend, each carrying the SHA-256 of the line before).
//
// The file mechanics are storage::AppendLog's (the same log the audit log
// uses); this class adds the entry format, the chain and replay checks, and
// the budget. Guarantees:
//   - Durability: each spend is one write() of the whole line followed by
//     fdatasync; RecordSpend returns OK only after both succeed. A failed write
//     is cut back off the file; a failed fdatasync poisons the Ledger (every
//     later spend fails) since the file's state is then unknown.
//   - Restarting never resets the spent budget: Open replays every spend
//     into the accountant and checks each epsilon_after against the replay.
//   - Tamper evidence: an edited, deleted, inserted or reordered line breaks
//     the hash chain (or the seq numbering, or the epsilon replay) and Open
//     fails with DataLoss naming the line and the reason. The chain cannot
//     protect the last line on its own (dropping or rewriting it leaves a
//     valid, shorter chain): anchor head_hash() elsewhere, e.g. in the audit
//     log, to cover it. The chain detects edits, not a forger who recomputes
//     every hash after their change; that also needs the external anchor.
//   - Crash recovery: a trailing line without '\n' is a write torn by a crash
//     before RecordSpend returned, so no training relied on it. Open drops it
//     (truncates the file back to the last complete line, fdatasyncs), logs a
//     warning and reports the number of bytes dropped in
//     dropped_partial_bytes(). Any other malformed line is an error, and the
//     file is then left untouched.
//   - Exclusivity: Open takes an exclusive flock on the file; a second Open
//     of the same file (from any process) fails with Unavailable until the
//     first Ledger is destroyed.
//   - Mode: a new ledger file is created with mode 0600 whatever the umask.
//
// Thread safety: all methods may be called concurrently.

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "privacy/budget.h"
#include "privacy/ledger_format.h"
#include "privacy/rdp_accountant.h"
#include "storage/append_log.h"

namespace cohort::privacy {

struct SpendCheck {
  double epsilon_after = 0.0;  // epsilon of all past spends plus this one
  double order = 0.0;          // best RDP order for epsilon_after
  bool fits = false;           // epsilon_after <= budget.epsilon
};

class Ledger {
 public:
  // Opens the ledger at `path`, creating it (with a header for `site` and
  // `budget`) if it does not exist or is empty. An existing ledger must
  // belong to `site` and carry exactly `budget`: a budget is changed by
  // starting a new ledger, never silently. Errors: InvalidArgument for bad
  // arguments, DataLoss for a corrupt or edited file (the message names the
  // line), FailedPrecondition for a ledger of another site or budget,
  // Unavailable for one held by another Ledger, NotFound and others naming
  // the file for I/O failures.
  static absl::StatusOr<std::unique_ptr<Ledger>> Open(
      const std::string& path, std::string_view site,
      const PrivacyBudget& budget);

  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // What spending `request` would bring the site's epsilon to. Changes
  // nothing. InvalidArgument for a bad request.
  absl::StatusOr<SpendCheck> CanSpend(const SpendRequest& request) const;

  // Appends `request` and makes it durable. ResourceExhausted (and nothing
  // written or changed) if it would exceed the budget.
  absl::StatusOr<SpendCheck> RecordSpend(const SpendRequest& request);

  // Epsilon of every recorded spend, composed; 0 for a fresh ledger.
  double spent_epsilon() const;
  // budget().epsilon - spent_epsilon(), never negative. Under RDP
  // composition a phase whose own epsilon equals this may still not fit:
  // ask CanSpend.
  double remaining_epsilon() const;
  const PrivacyBudget& budget() const { return budget_; }
  const std::string& site() const { return site_; }
  const std::string& path() const { return path_; }
  int64_t spend_count() const;
  // Whether a spend for `job`'s `round` is recorded: lets a writer that may be re-run
  // after a crash (the server's mirror of its sites' spends) record each round once.
  bool HasSpend(std::string_view job, int64_t round) const;
  // Whether the last recorded spend is for `job`'s `round`: a site that finds its own
  // reservation there, with no update kept for it, knows nothing was released under it
  // (client/kept_update.h).
  bool LastSpendIs(std::string_view job, int64_t round) const;
  // Hex SHA-256 of the header (line 1): anchored outside the file, it pins the budget.
  std::string header_hash() const;
  // Hex SHA-256 of the last line: the value to anchor outside the file.
  std::string head_hash() const;
  // Bytes of a torn trailing line dropped by Open; 0 normally.
  int64_t dropped_partial_bytes() const { return dropped_partial_bytes_; }

 private:
  Ledger(std::string path, std::string site, PrivacyBudget budget);

  // Checks one line found by Open and replays it into the accountant.
  absl::Status ReplayLine(const storage::LogLine& line);
  // The outcome of adding `request` to the past spends; the composed
  // accountant goes to *planned. Requires mu_.
  absl::StatusOr<SpendCheck> CheckLocked(const SpendRequest& request,
                                         RdpAccountant* planned) const;

  const std::string path_;
  const std::string site_;
  const PrivacyBudget budget_;

  mutable std::mutex mu_;
  std::unique_ptr<storage::AppendLog> log_;  // guarded by mu_
  RdpAccountant accountant_;                 // guarded by mu_
  double spent_epsilon_ = 0.0;
  int64_t spend_count_ = 0;
  int64_t dropped_partial_bytes_ = 0;
  std::string header_hash_;  // guarded by mu_
  std::set<std::pair<std::string, int64_t>> spent_rounds_;  // (job, round); guarded by mu_
  std::pair<std::string, int64_t> last_spend_{"", -1};       // (job, round); guarded by mu_
};

}  // namespace cohort::privacy
