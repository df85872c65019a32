#include "storage/line_reader.h"

#include <fcntl.h>

#include <algorithm>

namespace cohort::storage {
namespace {
constexpr std::size_t kReadChunkBytes = 64 * 1024;
}  // namespace

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::filesystem::path& path,
                                                             std::size_t max_line_bytes) {
  absl::StatusOr<File> file = File::Open(path, O_RDONLY);
  if (!file.ok()) return file.status();
  return std::unique_ptr<LineReader>(new LineReader(*std::move(file), max_line_bytes));
}

LineReader::LineReader(const File& file, std::size_t max_line_bytes)
    : file_(file), max_line_bytes_(max_line_bytes), buffer_(kReadChunkBytes) {}

LineReader::LineReader(File&& owned, std::size_t max_line_bytes)
    : owned_(std::move(owned)), file_(owned_), max_line_bytes_(max_line_bytes),
      buffer_(kReadChunkBytes) {}

absl::Status LineReader::Fill() {
  begin_ = end_ = 0;
  absl::StatusOr<std::size_t> n =
      file_.PreadAll(read_offset_, std::as_writable_bytes(std::span(buffer_)));
  if (!n.ok()) return n.status();
  if (*n == 0) eof_ = true;
  end_ = *n;
  read_offset_ += *n;
  return absl::OkStatus();
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

}  // namespace cohort::storage
