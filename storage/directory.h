#pragma once
// Directory operations of the durable-storage layer: making entries durable (fsync of
// the directory), renaming without replacing, and directories published whole.

#include <filesystem>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::storage {

// fsync of a directory, so that entries created, renamed or removed in it survive a
// power loss.
absl::Status SyncDirectory(const std::filesystem::path& directory);
// SyncDirectory of the directory holding `path` ("." for a bare file name).
absl::Status SyncParentDirectory(const std::filesystem::path& path);

// The directory holding `path`, "." for a bare file name.
std::filesystem::path ParentDirectory(const std::filesystem::path& path);

// Renames `from` to `to` only if `to` does not exist (AlreadyExists otherwise, whatever
// `to` is): renameat2(RENAME_NOREPLACE), or where the file system lacks it, link+unlink
// for a file and a checked rename for a directory.
absl::Status RenameNoReplace(const std::filesystem::path& from, const std::filesystem::path& to);

// A directory under construction: `parent/.NAME.staging-XXXXXX`, mode 0700. Publish()
// renames it to `parent/NAME` (AlreadyExists if that exists, whatever it is), so an
// existing directory is never overwritten or merged into; if it is never published, the
// destructor removes it and everything in it, so a failed run leaves no half-written
// directory under the final name.
class StagingDirectory {
 public:
  static absl::StatusOr<StagingDirectory> Create(const std::filesystem::path& parent,
                                                 std::string_view name);

  StagingDirectory(StagingDirectory&& other) noexcept;
  StagingDirectory& operator=(StagingDirectory&&) = delete;
  StagingDirectory(const StagingDirectory&) = delete;
  StagingDirectory& operator=(const StagingDirectory&) = delete;
  ~StagingDirectory();

  const std::filesystem::path& path() const { return staging_; }
  const std::filesystem::path& final_path() const { return final_; }

  // Syncs the staging directory, renames it into place, syncs the parent.
  absl::Status Publish();

 private:
  StagingDirectory(std::filesystem::path staging, std::filesystem::path final_path)
      : staging_(std::move(staging)), final_(std::move(final_path)) {}

  std::filesystem::path staging_;
  std::filesystem::path final_;
  bool published_ = false;
};

}  // namespace cohort::storage
