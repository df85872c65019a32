#pragma once
// The server's anchors of its sites' privacy ledgers: for each site, the ledger position
// (header hash, spend count, last line's hash, epsilon spent) the server last learned,
// kept in the server's state directory so that it outlives every job and its --out.
//
// A ledger's hash chain alone cannot notice its file being deleted, cut back to an
// earlier line, or rewritten with every hash recomputed (a new budget in the header, say):
// the result is a valid, shorter or different chain. The anchors can. At Join the site
// reports its position (v1::LedgerPosition) and CheckJoin refuses, with
// FailedPrecondition naming the site and both positions, a ledger that is
//   - missing while the anchor holds spends (restore it from a backup),
//   - behind the anchor (fewer spends, or less epsilon),
//   - at the anchor's spend count with a different last line,
//   - under a different header than the one anchored the first time the site was seen.
// The anchor moves forward when a round that carried the site's spend is recorded
// (Advance), never back.
//
// File: STATE/ledger-anchors.jsonl, a storage::AppendLog (0600, hash-chained, fdatasync
// per line); one JSON line per anchor change, the last line of a site wins:
//   {"site":"a","header_sha256":"…","spends":3,"head_sha256":"…","epsilon_spent":1.2,"prev":"…"}
// "prev" is the SHA-256 of the line before (64 zeros for the first).
//
// Thread-safe. CheckJoin and Advance write only when the anchor changes; the map that
// checks read is never locked across a disk write.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/job_types.h"
#include "storage/append_log.h"

namespace cohort::server {

// Whether `reported` is acceptable from `site` given the anchor (none: the site was never
// seen). OK, or FailedPrecondition naming the site, the ledger's and the anchor's position
// and what to do.
absl::Status CheckLedgerAgainstAnchor(const std::string& site, const LedgerPosition& reported,
                                      const std::optional<LedgerPosition>& anchor);

class LedgerAnchors {
 public:
  static constexpr const char* kFileName = "ledger-anchors.jsonl";

  // Opens (creating) STATE_DIR/ledger-anchors.jsonl; the directory is created 0700 if
  // missing. DataLoss naming the line when the file does not verify.
  static absl::StatusOr<std::unique_ptr<LedgerAnchors>> Open(const std::filesystem::path& state_dir);
  LedgerAnchors(const LedgerAnchors&) = delete;
  LedgerAnchors& operator=(const LedgerAnchors&) = delete;

  // The Join check (CheckLedgerAgainstAnchor); a position ahead of the anchor, or a site's
  // first header, is anchored before this returns OK.
  absl::Status CheckJoin(const std::string& site, const LedgerPosition& reported);
  // A recorded round used the site's spend at `reported`: the anchor moves there if that
  // is ahead of it. A position behind the anchor is ignored (the anchor never moves back).
  absl::Status Advance(const std::string& site, const LedgerPosition& reported);

  std::optional<LedgerPosition> Find(const std::string& site) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit LedgerAnchors(std::filesystem::path path) : path_(std::move(path)) {}
  absl::Status ReplayLine(const storage::LogLine& line);
  // Appends `position` as the site's anchor when it is ahead of the current one.
  absl::Status Store(const std::string& site, const LedgerPosition& position);

  const std::filesystem::path path_;
  mutable std::mutex mu_;
  std::map<std::string, LedgerPosition> anchors_;  // guarded by mu_
  std::mutex write_mu_;                            // serialises Store; taken before mu_
  std::unique_ptr<storage::AppendLog> log_;        // guarded by write_mu_
};

}  // namespace cohort::server
