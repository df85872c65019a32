#include "audit/writer.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "audit/reader.h"

namespace cohort::audit {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

absl::Status SyncDirectoryOf(const std::filesystem::path& path) {
  const std::filesystem::path dir =
      path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat(dir.string(), ": cannot open directory to sync it: ", ErrnoText(errno)));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat(dir.string(), ": fsync of directory failed: ", ErrnoText(err)));
  }
  return absl::OkStatus();
}

// Opens (creating if needed) and locks the log file. Sets *created when this
// call created it.
absl::StatusOr<int> OpenAndLock(const std::filesystem::path& path, bool* created) {
  constexpr int kFlags = O_RDWR | O_APPEND | O_CLOEXEC;
  int fd = ::open(path.c_str(), kFlags | O_CREAT | O_EXCL, 0640);
  *created = fd >= 0;
  if (fd < 0 && errno == EEXIST) fd = ::open(path.c_str(), kFlags);
  if (fd < 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat(path.string(), ": cannot open audit log for appending: ", ErrnoText(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat(
          path.string(), ": audit log is already open for writing (locked by another writer)"));
    }
    return absl::InternalError(absl::StrCat(path.string(), ": flock failed: ", ErrnoText(err)));
  }
  if (*created) {
    // The new directory entry must be durable before the first acknowledged entry.
    if (absl::Status s = SyncDirectoryOf(path); !s.ok()) {
      ::close(fd);
      return s;
    }
  }
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Writer>> Writer::Open(const std::filesystem::path& path,
                                                     crypto::SigningKey key,
                                                     WriterOptions options) {
  bool created = false;
  absl::StatusOr<int> fd = OpenAndLock(path, &created);
  if (!fd.ok()) return fd.status();
  auto close_on_error = [&](absl::Status status) {
    ::close(*fd);
    return status;
  };

  // Verified only after the lock is held, so no other writer can extend the file
  // between the check and the first append.
  absl::StatusOr<ChainVerification> verified = VerifyAuditChain(path, key.public_key());
  if (!verified.ok()) return close_on_error(verified.status());
  if (!verified->ok()) {
    return close_on_error(absl::DataLossError(
        absl::StrCat(path.string(), ": ", verified->Summary(),
                     "; refusing to append to an audit log that does not verify")));
  }
  if (verified->trailing_partial_line) {
    if (::ftruncate(*fd, static_cast<off_t>(verified->verified_bytes)) != 0 ||
        ::fdatasync(*fd) != 0) {
      return close_on_error(absl::InternalError(absl::StrCat(
          path.string(), ": cannot cut the trailing partial line: ", ErrnoText(errno))));
    }
    spdlog::warn(
        "audit log {}: cut a trailing partial line of {} bytes (an append interrupted by a "
        "crash, never acknowledged); the chain continues at seq {}",
        path.string(), verified->trailing_partial_bytes, verified->entry_count);
  }
  spdlog::info("audit log {}: opened with {} entries, head {}", path.string(),
               verified->entry_count, verified->head_hash);

  if (!options.clock) options.clock = [] { return absl::Now(); };
  return std::unique_ptr<Writer>(new Writer(path, *fd, std::move(key), std::move(options),
                                            verified->entry_count, verified->head_hash,
                                            verified->verified_bytes));
}

Writer::Writer(std::filesystem::path path, int fd, crypto::SigningKey key, WriterOptions options,
               std::uint64_t entry_count, std::string head_hash, std::uint64_t size)
    : path_(std::move(path)),
      fd_(fd),
      key_(std::move(key)),
      options_(std::move(options)),
      entry_count_(entry_count),
      head_hash_(std::move(head_hash)),
      size_(size) {}

Writer::~Writer() { ::close(fd_); }

absl::StatusOr<std::uint64_t> Writer::Append(const Record& record) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failed_) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_.string(), ": an earlier append failed with an I/O error; reopen the audit log"));
  }
  const std::uint64_t seq = entry_count_;
  absl::StatusOr<std::string> body =
      EncodeUnsignedEntry(seq, FormatEntryTime(options_.clock()), record, head_hash_);
  if (!body.ok()) return body.status();
  std::string line = AttachSignature(*body, key_.Sign(absl::StrCat(kEntrySignatureContext, *body)));
  line += '\n';
  if (line.size() > kMaxEntryLineBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit record ", record.action, ": the entry would be ", line.size(),
                     " bytes, expected at most ", kMaxEntryLineBytes, " (shrink old/new)"));
  }

  // One write() of the whole line: a crash leaves either the entire line or a
  // prefix without "\n", which readers ignore and Open cuts off.
  ssize_t written;
  do {
    written = ::write(fd_, line.data(), line.size());
  } while (written < 0 && errno == EINTR);
  if (written != static_cast<ssize_t>(line.size())) {
    const int err = written < 0 ? errno : ENOSPC;
    // Take back a partial line now so that later appends do not follow garbage.
    if (written > 0 && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0) failed_ = true;
    const std::string message =
        absl::StrCat(path_.string(), ": appending entry seq ", seq, " wrote ",
                     written < 0 ? 0 : written, " of ", line.size(), " bytes: ", ErrnoText(err));
    if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
      return absl::ResourceExhaustedError(message);
    }
    failed_ = true;
    return absl::InternalError(message);
  }
  if (::fdatasync(fd_) != 0) {
    // After a failed fsync the kernel may have dropped the dirty pages; what is
    // on disk is unknown, so no further entry may be chained onto it.
    failed_ = true;
    return absl::InternalError(absl::StrCat(path_.string(), ": fdatasync after entry seq ", seq,
                                            " failed: ", ErrnoText(errno)));
  }
  line.pop_back();
  head_hash_ = LineHash(line);
  ++entry_count_;
  size_ += line.size() + 1;
  return seq;
}

std::string Writer::head_hash() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_hash_;
}

std::uint64_t Writer::entry_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entry_count_;
}

}  // namespace cohort::audit
