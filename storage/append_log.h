#pragma once
// storage::AppendLog: the one append-only, line-oriented, hash-chained log. The audit log
// (audit/writer.h) and the privacy ledger (privacy/ledger.h) are this log with their own
// entry formats; each format supplies its chain function and checks its own entries
// through the validator, and this class supplies the mechanics they share:
//
//   - One writer: Open takes an exclusive flock() for the log's lifetime; a second Open
//     of the same file, from any process, fails with Unavailable.
//   - Mode: a file Open creates gets exactly `options.mode` (fchmod; the umask does not
//     narrow it), and its directory is fsync'd so the new entry is durable.
//   - Recovery: Open reads every complete line, in order, and hands each to the caller's
//     validator with the chain hash of the line before it; the first error stops Open
//     and is returned with the file untouched (nothing is ever appended after a line
//     that does not verify). Only then is a torn tail repaired: a last line without "\n"
//     is a write interrupted by a crash, never acknowledged; it is cut off, the file is
//     fdatasync'd, and the number of bytes cut is reported (cut_tail_bytes()).
//   - Durability: Append writes the line and its "\n" with one write() at the end of the
//     file and fdatasync()s before it returns OK, so an acknowledged line survives a
//     crash or power loss. A failed write is cut back off the file (ResourceExhausted
//     for a full disk or file size limit), and the log stays usable. After a failed
//     fdatasync, or a failed cut, what is on disk is unknown: the log is poisoned and
//     every later Append fails (FailedPrecondition) until it is reopened, which
//     re-validates the file (fail closed).
//
// Not thread-safe: the callers (audit::Writer, privacy::Ledger) serialise Append
// together with the state they derive from each line.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/file.h"

namespace cohort::storage {

// The head of an empty chain: 64 hex zeros, which both log formats use as the first
// line's prev.
inline constexpr std::string_view kZeroChainHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

struct AppendLogOptions {
  // What the log is, for messages: "audit log", "privacy ledger".
  std::string kind;
  // The mode of a file Open creates; an existing file keeps its own.
  mode_t mode = kSecretFileMode;
  // The longest line accepted, "\n" included, when reading and when appending.
  std::size_t max_line_bytes = std::size_t{1} << 20;
  // The format's chain function: the hash (hex) that the line after `line` carries as
  // its prev. Required.
  std::function<std::string(std::string_view line)> chain_hash;
};

// One complete line met by Open.
struct LogLine {
  std::uint64_t number = 0;      // 1-based
  std::string_view text;         // without its "\n"
  std::string_view prev_hash;    // chain_hash of the line before; kZeroChainHash for line 1
};
// Checks one line and updates the caller's state from it; an error stops Open.
using LineValidator = std::function<absl::Status(const LogLine& line)>;

class AppendLog {
 public:
  // Opens the log at `path`, creating it if it does not exist. NotFound when the
  // directory does not exist, Unavailable when another writer holds the log, DataLoss
  // (from this class: a line over max_line_bytes) or whatever the validator returns
  // for a line that does not verify, I/O errors naming the file.
  static absl::StatusOr<std::unique_ptr<AppendLog>> Open(const std::filesystem::path& path,
                                                         AppendLogOptions options,
                                                         const LineValidator& validate);

  AppendLog(const AppendLog&) = delete;
  AppendLog& operator=(const AppendLog&) = delete;

  // Appends `line` (which must not contain "\n") and returns once it is on disk.
  // InvalidArgument (nothing written) for a line with "\n" or over max_line_bytes.
  absl::Status Append(std::string_view line);

  // Complete lines in the log, and the chain hash of the last (kZeroChainHash when empty).
  std::uint64_t line_count() const { return line_count_; }
  const std::string& head_hash() const { return head_hash_; }
  // Bytes of complete lines, each with its "\n".
  std::uint64_t size() const { return size_; }
  // Bytes of a torn last line that Open cut off; 0 normally.
  std::uint64_t cut_tail_bytes() const { return cut_tail_bytes_; }
  // Open created the file.
  bool created() const { return created_; }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  AppendLog(File file, AppendLogOptions options, bool created)
      : file_(std::move(file)), options_(std::move(options)), created_(created) {}

  absl::Status Recover(const LineValidator& validate);

  File file_;
  const AppendLogOptions options_;
  const bool created_;
  std::uint64_t line_count_ = 0;
  std::string head_hash_{kZeroChainHash};
  std::uint64_t size_ = 0;
  std::uint64_t cut_tail_bytes_ = 0;
  std::string poisoned_;  // why appends are refused; empty while usable
};

}  // namespace cohort::storage
