#include "storage/file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cohort::storage {
namespace {

// Debian's abseil keeps its own absl::string_view, which std::string_view does not
// convert to; absl::StrCat needs this.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::Status ErrnoStatus(int error, std::string_view what, const std::filesystem::path& path) {
  // "cannot open /a/b: no such file or directory": strerror's text, lowercased to
  // continue the sentence.
  std::string reason = std::generic_category().message(error);
  if (!reason.empty()) reason[0] = absl::ascii_tolower(static_cast<unsigned char>(reason[0]));
  const std::string message = absl::StrCat(Av(what), " ", path.string(), ": ", reason);
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case EWOULDBLOCK:
      return absl::UnavailableError(message);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<File> File::Open(const std::filesystem::path& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", path);
  return File(fd, path);
}

absl::StatusOr<File> File::OpenDirectory(const std::filesystem::path& path) {
  return Open(path.empty() ? std::filesystem::path(".") : path, O_RDONLY | O_DIRECTORY);
}

File::File(File&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status File::WriteAll(std::span<const std::byte> bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      return ErrnoStatus(
          error, absl::StrCat("cannot write (", done, " of ", bytes.size(), " bytes written)"),
          path_);
    }
    done += static_cast<std::size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status File::WriteAll(std::string_view text) {
  return WriteAll(std::as_bytes(std::span(text.data(), text.size())));
}

absl::StatusOr<std::size_t> File::PreadAll(std::uint64_t offset, std::span<std::byte> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done,
                              static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot read at byte ", offset + done, " of"), path_);
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

absl::StatusOr<std::string> File::ReadAll() const {
  absl::StatusOr<std::uint64_t> size = Size();
  if (!size.ok()) return size.status();
  // Sized from fstat, then read to the real end: the file may grow or shrink meanwhile.
  std::string contents(static_cast<std::size_t>(*size) + 1, '\0');
  std::size_t done = 0;
  while (true) {
    absl::StatusOr<std::size_t> n = PreadAll(
        done, std::as_writable_bytes(std::span(contents.data() + done, contents.size() - done)));
    if (!n.ok()) return n.status();
    done += *n;
    if (done < contents.size()) break;
    contents.resize(contents.size() * 2);
  }
  contents.resize(done);
  return contents;
}

absl::Status File::Sync() {
  if (::fsync(fd_) != 0) return ErrnoStatus(errno, "cannot fsync", path_);
  return absl::OkStatus();
}

absl::Status File::DataSync() {
  if (::fdatasync(fd_) != 0) return ErrnoStatus(errno, "cannot fdatasync", path_);
  return absl::OkStatus();
}

absl::Status File::Truncate(std::uint64_t size) {
  int rc;
  do {
    rc = ::ftruncate(fd_, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0)
    return ErrnoStatus(errno, absl::StrCat("cannot truncate to ", size, " bytes"), path_);
  return absl::OkStatus();
}

absl::StatusOr<struct stat> File::Stat() const {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) return ErrnoStatus(errno, "cannot stat", path_);
  return info;
}

absl::StatusOr<std::uint64_t> File::Size() const {
  absl::StatusOr<struct stat> info = Stat();
  if (!info.ok()) return info.status();
  return static_cast<std::uint64_t>(info->st_size);
}

absl::Status File::SetMode(mode_t mode) {
  if (::fchmod(fd_, mode) != 0) return ErrnoStatus(errno, "cannot set the mode of", path_);
  return absl::OkStatus();
}

absl::Status File::LockExclusive(LockWait wait) {
  const int operation = wait == LockWait::kWait ? LOCK_EX : LOCK_EX | LOCK_NB;
  int rc;
  do {
    rc = ::flock(fd_, operation);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return absl::OkStatus();
  if (errno == EWOULDBLOCK) {
    return absl::UnavailableError(
        absl::StrCat(path_.string(), " is locked by another writer (process or open file); "
                                     "stop it or wait until it closes the file"));
  }
  return ErrnoStatus(errno, "cannot lock", path_);
}

absl::Status File::Close() {
  // close(2) must not be retried after EINTR on Linux: the descriptor is gone either way.
  if (::close(std::exchange(fd_, -1)) != 0) return ErrnoStatus(errno, "cannot close", path_);
  return absl::OkStatus();
}

}  // namespace cohort::storage
