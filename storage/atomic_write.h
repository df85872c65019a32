#pragma once
// The one atomic whole-file write: a reader of `path` sees either the old file (or no
// file) or the complete new one, never a prefix or a mix, even across a crash or power
// loss. Every durable whole file Cohort writes (checkpoints, job outputs, keys,
// certificates, startup kits, audit bundles) goes through here.
//
// How: the bytes go to a new temporary file in the same directory,
// `.NAME.tmp-XXXXXXXX` (created with O_CREAT|O_EXCL and a random suffix, so two writers
// never share one), whose mode is set with fchmod before the first byte (the umask
// neither widens nor narrows it, and a secret is never readable by others, not even
// before the rename); it is fsync'd, closed, renamed over `path` (or, with
// IfExists::kFail, renamed only if `path` does not exist), and the directory is
// fsync'd, so after OK both the data and the rename are durable. On any failure the
// temporary file is removed and `path` is untouched. A crash can leave a temporary
// file behind under its hidden name; never a partial file under `path`.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/file.h"

namespace cohort::storage {

enum class IfExists {
  kReplace,  // replace an existing file (the usual case: checkpoints, outputs)
  kFail,     // leave an existing `path` alone and return AlreadyExists (keys, kits)
};

// Appends bytes to the file being written.
using ByteSink = std::function<absl::Status(std::span<const std::byte>)>;
// Produces the file's contents through the sink; an error from it (its own, or the
// sink's) abandons the write.
using ByteProducer = std::function<absl::Status(const ByteSink&)>;

absl::Status WriteFileAtomically(const std::filesystem::path& path, const ByteProducer& produce,
                                 mode_t mode = kPublicFileMode,
                                 IfExists if_exists = IfExists::kReplace);
absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents,
                                 mode_t mode = kPublicFileMode,
                                 IfExists if_exists = IfExists::kReplace);
absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 std::span<const std::uint8_t> contents,
                                 mode_t mode = kPublicFileMode,
                                 IfExists if_exists = IfExists::kReplace);

// The whole file. NotFound when it does not exist; other errors name the file.
absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path);

// The hidden temporary name WriteFileAtomically uses for `path`, without its random
// suffix: `.NAME.tmp-`. Tests and clean-up tools recognise leftovers by it.
std::string TemporaryNamePrefix(const std::filesystem::path& path);

}  // namespace cohort::storage
