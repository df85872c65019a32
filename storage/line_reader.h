#pragma once
// Reads a file as "\n"-terminated lines with bounded memory, telling whole lines from a
// trailing partial one (a write torn by a crash). Shared by the append-only log's
// recovery on open and by readers that verify a log without opening it for writing.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/file.h"

namespace cohort::storage {

class LineReader {
 public:
  enum class Next {
    kLine,     // *line holds a whole line, without its "\n"
    kPartial,  // *line holds the last bytes of the file, which have no "\n"
    kTooLong,  // the next line exceeds max_line_bytes (with its "\n"); reading stops
    kEnd,      // no more bytes
  };

  // Reads the file at `path`. NotFound if it does not exist; other errors name it.
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::filesystem::path& path,
                                                          std::size_t max_line_bytes);
  // Reads `file` from offset 0 with pread, leaving its offset alone; `file` must stay
  // open while this reader is in use.
  LineReader(const File& file, std::size_t max_line_bytes);

  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  absl::StatusOr<Next> Read(std::string* line);

  // Bytes consumed by the whole lines returned so far (each with its "\n").
  std::uint64_t offset() const { return offset_; }

 private:
  LineReader(File&& owned, std::size_t max_line_bytes);
  absl::Status Fill();

  File owned_;  // open only when this reader opened the file itself
  const File& file_;
  std::size_t max_line_bytes_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
  std::size_t end_ = 0;
  std::uint64_t read_offset_ = 0;  // where the next Fill reads
  bool eof_ = false;
  std::uint64_t offset_ = 0;
};

}  // namespace cohort::storage
