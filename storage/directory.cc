#include "storage/directory.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/file.h"

namespace cohort::storage {
namespace {

absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status AlreadyExists(const std::filesystem::path& path) {
  return absl::AlreadyExistsError(
      absl::StrCat(path.string(), " already exists; refusing to overwrite it"));
}

}  // namespace

std::filesystem::path ParentDirectory(const std::filesystem::path& path) {
  std::filesystem::path parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

absl::Status SyncDirectory(const std::filesystem::path& directory) {
  absl::StatusOr<File> dir = File::OpenDirectory(directory);
  if (!dir.ok()) return dir.status();
  return dir->Sync();
}

absl::Status SyncParentDirectory(const std::filesystem::path& path) {
  return SyncDirectory(ParentDirectory(path));
}

absl::Status RenameNoReplace(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    return absl::OkStatus();
  }
  if (errno == EEXIST) return AlreadyExists(to);
  if (errno != EINVAL && errno != ENOSYS) {
    return ErrnoStatus(errno, absl::StrCat("cannot rename ", from.string(), " to"), to);
  }
  struct stat from_info;
  if (::lstat(from.c_str(), &from_info) != 0) return ErrnoStatus(errno, "cannot stat", from);
  if (S_ISDIR(from_info.st_mode)) {
    // rename(2) would silently replace an empty directory: check first. Two publishers
    // racing on one name is not a case this fallback defends against.
    struct stat to_info;
    if (::lstat(to.c_str(), &to_info) == 0) return AlreadyExists(to);
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("cannot rename ", from.string(), " to"), to);
    }
    return absl::OkStatus();
  }
  // link(2) never replaces: it fails with EEXIST just as RENAME_NOREPLACE would.
  if (::link(from.c_str(), to.c_str()) != 0) {
    if (errno == EEXIST) return AlreadyExists(to);
    return ErrnoStatus(errno, absl::StrCat("cannot link ", from.string(), " to"), to);
  }
  ::unlink(from.c_str());
  return absl::OkStatus();
}

absl::StatusOr<StagingDirectory> StagingDirectory::Create(const std::filesystem::path& parent,
                                                          std::string_view name) {
  std::string temp_name = (parent / absl::StrCat(".", Av(name), ".staging-XXXXXX")).string();
  // mkdtemp creates the directory with mode 0700 and a random, unused suffix.
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
  if (absl::Status s = RenameNoReplace(staging_, final_); !s.ok()) return s;
  published_ = true;
  return SyncParentDirectory(final_);
}

}  // namespace cohort::storage
