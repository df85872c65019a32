#pragma once
// storage::File: the one owner of a file descriptor in Cohort's durable-storage layer.
// Every durable file (atomic writes, append-only logs, key files) is opened, written,
// synced, locked and closed through this class, so EINTR, short writes and the mapping
// of errno to absl codes are handled in exactly one place.
//
// A File is move-only; the destructor closes the descriptor (releasing any flock).
// Errors name the file and say what was being done ("cannot fsync /x/y: ...").

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::storage {

// Modes for files Cohort creates. The mode is applied with fchmod, so the umask
// neither widens nor narrows it.
inline constexpr mode_t kPublicFileMode = 0644;
inline constexpr mode_t kSecretFileMode = 0600;

// `what path: strerror(error)` with a code that says what kind of failure it was:
// NotFound (ENOENT), AlreadyExists (EEXIST, ENOTEMPTY), PermissionDenied (EACCES,
// EPERM, EROFS), Unavailable (EWOULDBLOCK), ResourceExhausted (ENOSPC, EDQUOT,
// EFBIG), Internal otherwise.
absl::Status ErrnoStatus(int error, std::string_view what, const std::filesystem::path& path);

class File {
 public:
  // open(2) with `flags` (O_CLOEXEC is always added) and, when the flags create the
  // file, `mode` (further narrowed by the umask: call SetMode for an exact mode).
  static absl::StatusOr<File> Open(const std::filesystem::path& path, int flags,
                                   mode_t mode = 0);
  // A directory opened read-only, for fsync and flock.
  static absl::StatusOr<File> OpenDirectory(const std::filesystem::path& path);

  File() = default;
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::filesystem::path& path() const { return path_; }

  // Writes every byte at the current offset (at the end with O_APPEND), retrying
  // after EINTR and short writes. On failure some prefix may have been written; the
  // message says how many bytes of how many.
  absl::Status WriteAll(std::span<const std::byte> bytes);
  absl::Status WriteAll(std::string_view text);

  // Reads up to out.size() bytes at `offset`; fewer only at end of file. Returns the
  // number read. Does not move the file offset.
  absl::StatusOr<std::size_t> PreadAll(std::uint64_t offset, std::span<std::byte> out) const;
  // The whole file, read from offset 0.
  absl::StatusOr<std::string> ReadAll() const;

  absl::Status Sync();      // fsync: data and metadata
  absl::Status DataSync();  // fdatasync: data and the metadata needed to read it (size)
  absl::Status Truncate(std::uint64_t size);
  absl::StatusOr<std::uint64_t> Size() const;
  absl::StatusOr<struct stat> Stat() const;
  absl::Status SetMode(mode_t mode);

  enum class LockWait { kFail, kWait };
  // An exclusive flock(2) held until the File is closed. With kFail, a lock held by
  // another open file description (another process, or another File in this one)
  // fails at once with Unavailable; with kWait, the call blocks until it is free.
  absl::Status LockExclusive(LockWait wait = LockWait::kFail);

  // Closes now and reports the error close(2) returns (some file systems report
  // write-back failures only there). The destructor closes silently.
  absl::Status Close();

 private:
  File(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}

  int fd_ = -1;
  std::filesystem::path path_;
};

}  // namespace cohort::storage
