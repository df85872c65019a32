#pragma once
// The spool file's system calls, shared by the receiver that writes an update's spool file
// (core/update_receiver.cc) and the fold that reads it back (core/fedavg.cc): whole
// writes and positioned reads that retry on EINTR, and errors that name the file.

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cohort::core::spool_io {

inline absl::Status ErrnoError(absl::string_view what, const std::filesystem::path& path) {
  return absl::InternalError(absl::StrCat(what, " ", path.string(), ": ", std::strerror(errno)));
}

inline absl::Status WriteAll(int fd, const std::byte* data, size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("writing", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

inline absl::Status ReadAllAt(int fd, std::byte* data, size_t size, off_t offset, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, data, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("reading", path);
    }
    if (n == 0) return absl::DataLossError(absl::StrCat("spool file ", path.string(), " is short"));
    data += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
  return absl::OkStatus();
}

}  // namespace cohort::core::spool_io
