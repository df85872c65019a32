#include "crypto/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "storage/file.h"

namespace cohort::crypto {

absl::StatusOr<SecretBytes> ReadSecretFile(const std::filesystem::path& path) {
  absl::StatusOr<storage::File> file = storage::File::Open(path, O_RDONLY);
  if (!file.ok()) return file.status();
  absl::StatusOr<struct stat> info = file->Stat();
  if (!info.ok()) return info.status();
  if ((info->st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is accessible by group or others (mode %04o); expected mode 0600 for a private key "
        "(chmod 600 it)",
        path.string(), info->st_mode & 07777));
  }
  if (!S_ISREG(info->st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path.string(), " is not a regular file"));
  }
  // Read straight into the secret buffer: no intermediate copy to wipe.
  SecretBytes secret(static_cast<std::size_t>(info->st_size));
  absl::StatusOr<std::size_t> read =
      file->PreadAll(0, std::as_writable_bytes(secret.mutable_span()));
  if (!read.ok()) return read.status();
  if (*read != secret.size()) {
    return absl::DataLossError(absl::StrCat(path.string(), " shrank while being read"));
  }
  return secret;
}

}  // namespace cohort::crypto
