#pragma once
// Durable whole-file replacement: a reader sees either the old file or the new one, never
// a mix, even across a crash. The data goes to `path.tmp`, is fsync'd, renamed over `path`,
// and the directory is fsync'd so the rename itself survives a power loss.

#include <filesystem>
#include <functional>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::core {

// Appends bytes to the file being written.
using ByteSink = std::function<absl::Status(std::span<const std::byte>)>;

absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 const std::function<absl::Status(const ByteSink&)>& produce,
                                 unsigned mode = 0644);
absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents,
                                 unsigned mode = 0644);
absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path);

}  // namespace cohort::core
