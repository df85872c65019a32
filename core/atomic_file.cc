#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace cohort::core {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::filesystem::path& path) {
  return absl::InternalError(absl::StrCat(what, " ", path.string(), ": ", std::strerror(errno)));
}

absl::Status FsyncDirectory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("opening directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync of directory", dir);
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFileAtomically(const std::filesystem::path& path,
                                 const std::function<absl::Status(const ByteSink&)>& produce,
                                 unsigned mode) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError("creating", tmp);
  const ByteSink sink = [&](std::span<const std::byte> bytes) -> absl::Status {
    const std::byte* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("writing", tmp);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return absl::OkStatus();
  };
  absl::Status status = produce(sink);
  if (status.ok() && ::fsync(fd) != 0) status = ErrnoError("fsync of", tmp);
  if (::close(fd) != 0 && status.ok()) status = ErrnoError("closing", tmp);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) status = ErrnoError("renaming onto", path);
  if (!status.ok()) {
    ::unlink(tmp.c_str());
    return status;
  }
  return FsyncDirectory(path.parent_path());
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents, unsigned mode) {
  return WriteFileAtomically(
      path,
      [&](const ByteSink& sink) {
        return sink({reinterpret_cast<const std::byte*>(contents.data()), contents.size()});
      },
      mode);
}

absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string(), ": ", std::strerror(errno)));
  std::ostringstream out;
  out << in.rdbuf();
  return std::move(out).str();
}

}  // namespace cohort::core
