#include "audit/line_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cohort::audit {
namespace {
constexpr std::size_t kReadChunkBytes = 64 * 1024;
}  // namespace

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::filesystem::path& path,
                                                             std::size_t max_line_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    return absl::PermissionDeniedError(
        absl::StrCat(path.string(), ": cannot open: ", std::strerror(err)));
  }
  return std::unique_ptr<LineReader>(new LineReader(fd, path, max_line_bytes));
}

LineReader::LineReader(int fd, std::filesystem::path path, std::size_t max_line_bytes)
    : fd_(fd), path_(std::move(path)), max_line_bytes_(max_line_bytes), buffer_(kReadChunkBytes) {}

LineReader::~LineReader() { ::close(fd_); }

absl::Status LineReader::Fill() {
  begin_ = end_ = 0;
  while (true) {
    const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::InternalError(absl::StrCat(path_.string(), ": read failed at byte ", offset_,
                                              ": ", std::strerror(errno)));
    }
    if (n == 0) eof_ = true;
    end_ = static_cast<std::size_t>(n);
    return absl::OkStatus();
  }
}

absl::StatusOr<LineReader::Next> LineReader::Read(std::string* line) {
  line->clear();
  while (true) {
    const char* first = buffer_.data() + begin_;
    const char* last = buffer_.data() + end_;
    const char* newline = std::find(first, last, '\n');
    line->append(first, newline);
    if (line->size() + 1 > max_line_bytes_) return Next::kTooLong;
    if (newline != last) {
      begin_ = static_cast<std::size_t>(newline - buffer_.data()) + 1;
      offset_ += line->size() + 1;
      return Next::kLine;
    }
    begin_ = end_;
    if (eof_) return line->empty() ? Next::kEnd : Next::kPartial;
    if (absl::Status s = Fill(); !s.ok()) return s;
  }
}

}  // namespace cohort::audit
