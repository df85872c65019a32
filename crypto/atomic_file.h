#pragma once
// Crash-safe file and directory writes for provisioning output (certificates, keys,
// CRLs, startup kits).
//
// Guarantees:
//   - WriteFileAtomically: a reader sees either no file (or the old file) or the
//     complete new one, never a prefix; after it returns OK the data and the rename
//     survive a power loss (temp file fsync'd, renamed, parent directory fsync'd).
//   - The temp file is created with the final mode already set (O_CREAT|O_EXCL with
//     0600 for secrets), so a private key is never readable by others, not even
//     between creation and rename.
//   - StagingDirectory: a directory is filled under a hidden temporary name and then
//     renamed into place with RENAME_NOREPLACE, so an existing directory is never
//     overwritten or merged into, and a failed run leaves no half-written directory
//     under the final name.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret.h"

namespace cohort::crypto {

inline constexpr mode_t kPublicFileMode = 0644;
inline constexpr mode_t kSecretFileMode = 0600;

enum class IfExists { kFail, kReplace };

// Writes `bytes` to `path` with exactly `mode` (the umask does not widen or narrow
// it). With IfExists::kFail an existing `path` is left alone and AlreadyExists is
// returned.
absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 std::span<const std::uint8_t> bytes, mode_t mode,
                                 IfExists if_exists);
absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view text,
                                 mode_t mode, IfExists if_exists);

absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path);

// Reads a private key or other secret into wiped-on-free memory. Fails with
// FailedPrecondition when the file is readable or writable by group or others, the
// way ssh refuses a world-readable identity file.
absl::StatusOr<SecretBytes> ReadSecretFile(const std::filesystem::path& path);

// fsync of a directory, so that entries created or renamed in it are durable.
absl::Status SyncDirectory(const std::filesystem::path& directory);

// A directory under construction: `parent/.NAME.staging-XXXXXX`, mode 0700. Publish()
// renames it to `parent/NAME` (AlreadyExists if that exists, whatever it is); if it is
// never published, the destructor removes it and everything in it.
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

}  // namespace cohort::crypto
