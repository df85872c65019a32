#include "crypto/atomic_file.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cohort::crypto {
namespace {

std::string ErrnoText(int error) { return std::generic_category().message(error); }

absl::Status ErrnoStatus(int error, absl::string_view what, const std::filesystem::path& path) {
  const std::string message = absl::StrCat(what, " ", path.string(), ": ", ErrnoText(error));
  if (error == ENOENT) return absl::NotFoundError(message);
  if (error == EEXIST || error == ENOTEMPTY) return absl::AlreadyExistsError(message);
  if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

std::filesystem::path ParentOf(const std::filesystem::path& path) {
  std::filesystem::path parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // close() reports write-back errors on some file systems: check it once.
  int Close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

// Renames without replacing: RENAME_NOREPLACE where the file system supports it,
// otherwise link + unlink, which fails with EEXIST just the same (files only).
int RenameNoReplace(const std::filesystem::path& from, const std::filesystem::path& to,
                    bool is_directory) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  if (is_directory) {
    // Without RENAME_NOREPLACE, rename(2) would silently replace an empty directory.
    struct stat st;
    if (::lstat(to.c_str(), &st) == 0) {
      errno = EEXIST;
      return -1;
    }
    return ::rename(from.c_str(), to.c_str());
  }
  if (::link(from.c_str(), to.c_str()) != 0) return -1;
  ::unlink(from.c_str());
  return 0;
}

}  // namespace

absl::Status SyncDirectory(const std::filesystem::path& directory) {
  FileDescriptor fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot open directory", directory);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "cannot fsync directory", directory);
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 std::span<const std::uint8_t> bytes, mode_t mode,
                                 IfExists if_exists) {
  const std::filesystem::path parent = ParentOf(path);
  struct stat existing;
  if (if_exists == IfExists::kFail && ::lstat(path.c_str(), &existing) == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat(path.string(), " already exists; refusing to overwrite it"));
  }
  std::string temp_name =
      (parent / absl::StrCat(".", path.filename().string(), ".tmp-XXXXXX")).string();
  // mkstemp creates the file with O_EXCL and mode 0600: private from the first moment.
  FileDescriptor fd(::mkstemp(temp_name.data()));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot create a temporary file in", parent);
  const std::filesystem::path temp(temp_name);

  absl::Status status = absl::OkStatus();
  if (::fchmod(fd.get(), mode) != 0) status = ErrnoStatus(errno, "cannot set the mode of", temp);
  for (std::size_t done = 0; status.ok() && done < bytes.size();) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      status = ErrnoStatus(errno, "cannot write", temp);
    } else {
      done += static_cast<std::size_t>(n);
    }
  }
  if (status.ok() && ::fsync(fd.get()) != 0) status = ErrnoStatus(errno, "cannot fsync", temp);
  if (status.ok() && fd.Close() != 0) status = ErrnoStatus(errno, "cannot close", temp);
  if (status.ok()) {
    const int renamed = if_exists == IfExists::kReplace
                            ? ::rename(temp.c_str(), path.c_str())
                            : RenameNoReplace(temp, path, /*is_directory=*/false);
    if (renamed != 0) {
      status = errno == EEXIST ? absl::AlreadyExistsError(absl::StrCat(
                                     path.string(), " already exists; refusing to overwrite it"))
                               : ErrnoStatus(errno, "cannot rename a temporary file to", path);
    }
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  return SyncDirectory(parent);
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view text,
                                 mode_t mode, IfExists if_exists) {
  return WriteFileAtomically(
      path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                          text.size()),
      mode, if_exists);
}

absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot open", path);
  std::string text;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot read", path);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
  }
  return text;
}

absl::StatusOr<SecretBytes> ReadSecretFile(const std::filesystem::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "cannot stat", path);
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is accessible by group or others (mode %04o); expected mode 0600 for a private key "
        "(chmod 600 it)",
        path.string(), st.st_mode & 07777));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path.string(), " is not a regular file"));
  }
  // Read straight into the secret buffer: no intermediate copy to wipe.
  SecretBytes secret(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < secret.size()) {
    const ssize_t n = ::read(fd.get(), secret.mutable_span().data() + done, secret.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot read", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path.string(), " shrank while being read"));
    }
    done += static_cast<std::size_t>(n);
  }
  return secret;
}

absl::StatusOr<StagingDirectory> StagingDirectory::Create(const std::filesystem::path& parent,
                                                          std::string_view name) {
  std::string temp_name =
      (parent / absl::StrCat(".", absl::string_view(name.data(), name.size()), ".staging-XXXXXX"))
          .string();
  // mkdtemp creates the directory with mode 0700.
  if (::mkdtemp(temp_name.data()) == nullptr) {
    return ErrnoStatus(errno, "cannot create a staging directory in", parent);
  }
  return StagingDirectory(std::filesystem::path(temp_name), parent / std::string(name));
}

StagingDirectory::StagingDirectory(StagingDirectory&& other) noexcept
    : staging_(std::move(other.staging_)),
      final_(std::move(other.final_)),
      published_(std::exchange(other.published_, true)) {}

StagingDirectory::~StagingDirectory() {
  if (published_ || staging_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(staging_, ignored);
}

absl::Status StagingDirectory::Publish() {
  if (published_) return absl::FailedPreconditionError("staging directory already published");
  if (absl::Status s = SyncDirectory(staging_); !s.ok()) return s;
  if (RenameNoReplace(staging_, final_, /*is_directory=*/true) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      return absl::AlreadyExistsError(
          absl::StrCat(final_.string(), " already exists; refusing to overwrite it"));
    }
    return ErrnoStatus(errno, "cannot rename the staging directory to", final_);
  }
  published_ = true;
  return SyncDirectory(ParentOf(final_));
}

}  // namespace cohort::crypto
