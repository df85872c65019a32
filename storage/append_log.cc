#include "storage/append_log.h"

#include <fcntl.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/directory.h"
#include "storage/line_reader.h"

namespace cohort::storage {
namespace {

constexpr int kAppendFlags = O_RDWR | O_APPEND;

// Opens `path` for appending, creating it with exactly `mode` if it does not exist.
// Sets *created when this call created it.
absl::StatusOr<File> OpenOrCreate(const std::filesystem::path& path, mode_t mode, bool* created) {
  absl::StatusOr<File> file = File::Open(path, kAppendFlags | O_CREAT | O_EXCL, mode);
  *created = file.ok();
  if (absl::IsAlreadyExists(file.status())) file = File::Open(path, kAppendFlags);
  if (!file.ok()) return file.status();
  if (*created) {
    if (absl::Status s = file->SetMode(mode); !s.ok()) return s;
  }
  return file;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AppendLog>> AppendLog::Open(const std::filesystem::path& path,
                                                           AppendLogOptions options,
                                                           const LineValidator& validate) {
  if (!options.chain_hash) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.kind, " ", path.string(), ": no chain function was given"));
  }
  bool created = false;
  absl::StatusOr<File> file = OpenOrCreate(path, options.mode, &created);
  if (!file.ok()) return file.status();
  if (absl::Status s = file->LockExclusive(); !s.ok()) {
    if (!absl::IsUnavailable(s)) return s;
    return absl::UnavailableError(absl::StrCat(
        options.kind, " ", path.string(),
        " is already open for writing (locked by another process or writer)"));
  }
  // The new directory entry must be durable before the first acknowledged line.
  if (created) {
    if (absl::Status s = SyncParentDirectory(path); !s.ok()) return s;
  }
  std::unique_ptr<AppendLog> log(new AppendLog(*std::move(file), std::move(options), created));
  // Read only once the lock is held, so no other writer can extend the file between
  // the check and the first append.
  if (absl::Status s = log->Recover(validate); !s.ok()) return s;
  return log;
}

absl::Status AppendLog::Recover(const LineValidator& validate) {
  LineReader reader(file_, options_.max_line_bytes);
  std::string line;
  while (true) {
    absl::StatusOr<LineReader::Next> next = reader.Read(&line);
    if (!next.ok()) return next.status();
    if (*next == LineReader::Next::kEnd) break;
    if (*next == LineReader::Next::kTooLong) {
      return absl::DataLossError(absl::StrCat(
          options_.kind, " ", path().string(), ": line ", line_count_ + 1, ": longer than ",
          options_.max_line_bytes, " bytes; refusing to append to a log that does not verify"));
    }
    if (*next == LineReader::Next::kPartial) {
      cut_tail_bytes_ = line.size();
      break;
    }
    if (validate) {
      const LogLine entry{line_count_ + 1, line, head_hash_};
      if (absl::Status s = validate(entry); !s.ok()) return s;
    }
    head_hash_ = options_.chain_hash(line);
    ++line_count_;
  }
  size_ = reader.offset();
  if (cut_tail_bytes_ > 0) {
    // Every line before it verified: only now may the file be changed.
    if (absl::Status s = file_.Truncate(size_); !s.ok()) return s;
    if (absl::Status s = file_.DataSync(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status AppendLog::Append(std::string_view line) {
  if (!poisoned_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options_.kind, " ", path().string(), " refuses appends after an earlier ",
                     poisoned_, "; reopen it, which verifies the file again"));
  }
  if (line.find('\n') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        options_.kind, " ", path().string(), ": a line to append contains a newline"));
  }
  if (line.size() + 1 > options_.max_line_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(options_.kind, " ", path().string(), ": a line of ", line.size() + 1,
                     " bytes with its newline, expected at most ", options_.max_line_bytes));
  }
  std::string bytes;
  bytes.reserve(line.size() + 1);
  bytes.append(line);
  bytes.push_back('\n');
  // One write() of the whole line: a crash leaves the entire line or a prefix without
  // "\n", which Open cuts off.
  if (absl::Status written = file_.WriteAll(bytes); !written.ok()) {
    // Take back a partial line now so that later appends do not follow garbage.
    if (absl::Status cut = file_.Truncate(size_); !cut.ok()) {
      poisoned_ = absl::StrCat("failed write that could not be cut back (", cut.message(), ")");
    }
    return written;
  }
  if (absl::Status synced = file_.DataSync(); !synced.ok()) {
    // After a failed fdatasync the kernel may have dropped the dirty pages: what is on
    // disk is unknown, so nothing more may be chained onto it.
    poisoned_ = absl::StrCat("failed fdatasync (", synced.message(), ")");
    return synced;
  }
  head_hash_ = options_.chain_hash(line);
  ++line_count_;
  size_ += bytes.size();
  return absl::OkStatus();
}

}  // namespace cohort::storage
