#pragma once
// audit::Writer appends signed, hash-chained entries to an append-only
// JSON-lines file. The entry format is defined in audit/entry.h.
//
// The file mechanics (one write per line, fdatasync before OK, exclusive flock,
// torn-tail repair, fail closed after a failed fdatasync) are storage::AppendLog's;
// this class adds the entry format, the signature and the chain check.
//
// Durability contract: Append returns OK only once the whole line is on disk, so an
// acknowledged entry survives a crash or power loss. The caller (the server) applies
// the change it records only after Append returns OK; if Append fails, the change
// must not be applied.
//
// Usage:
//   auto key = crypto::ReadSigningKeyFile("/etc/cohort/audit.key");
//   auto writer = audit::Writer::Open("/var/lib/cohort/audit.log", *std::move(key));
//   auto seq = (*writer)->Append({.actor = "alice", .role = "admin",
//                                 .action = audit::action::kParamSet,
//                                 .target = {.job = "mnist", .parameter = "rounds"},
//                                 .old_value = 10, .new_value = 20});
//   if (!seq.ok()) { /* refuse the change */ }

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "audit/entry.h"
#include "crypto/signing.h"
#include "storage/append_log.h"

namespace cohort::audit {

struct WriterOptions {
  // Where entry times come from; empty means absl::Now. Tests pin it.
  std::function<absl::Time()> clock;
};

class Writer {
 public:
  // Opens the log at `path`, creating it (mode exactly 0640) if it does not exist.
  //
  // An existing log is verified first with key.public_key() (every line: form,
  // signature, prev chain, seq) and the chain continues from its head. A log that
  // does not verify is refused with DataLoss and left untouched, so that nothing
  // is ever appended after a tampered or foreign entry. The one repair made is a
  // trailing partial line (a crash during an append, never acknowledged): it is
  // cut off, and a warning is logged.
  //
  // The writer holds an exclusive flock() on the file until it is destroyed; a
  // second Open of the same file, from any process, fails with Unavailable.
  static absl::StatusOr<std::unique_ptr<Writer>> Open(const std::filesystem::path& path,
                                                      crypto::SigningKey key,
                                                      WriterOptions options = {});
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Appends one entry for `record` and returns its seq once it is on disk.
  // Thread-safe; entries from concurrent calls are serialised in some order.
  // InvalidArgument if the record breaks the format (empty actor, malformed
  // action name, strings that are not UTF-8, a line over kMaxEntryLineBytes);
  // the log is unchanged and the writer stays usable. A failed write (for example
  // ResourceExhausted: disk full) is cut back off the file and the writer stays
  // usable; a failed fdatasync, or a write that cannot be cut back, disables it
  // (FailedPrecondition afterwards): reopen it, which re-verifies the file. After a
  // failed fdatasync the entry may or may not be on disk; either way the change was
  // not acknowledged.
  absl::StatusOr<std::uint64_t> Append(const Record& record);

  // The hash of the last line (64 zeros when empty) and the number of entries:
  // published by the server so that auditors can pin them (see ChainExpectations).
  std::string head_hash() const;
  std::uint64_t entry_count() const;

  const std::filesystem::path& path() const { return path_; }

 private:
  Writer(std::filesystem::path path, std::unique_ptr<storage::AppendLog> log,
         crypto::SigningKey key, WriterOptions options);

  const std::filesystem::path path_;
  const crypto::SigningKey key_;
  const WriterOptions options_;

  mutable std::mutex mu_;
  const std::unique_ptr<storage::AppendLog> log_;  // guarded by mu_
};

}  // namespace cohort::audit
