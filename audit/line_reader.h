#pragma once
// Reads a file as "\n"-terminated lines with bounded memory, telling whole lines
// from a trailing partial one. Used by the audit reader and verifier.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cohort::audit {

class LineReader {
 public:
  enum class Next {
    kLine,     // *line holds a whole line, without its "\n"
    kPartial,  // *line holds the last bytes of the file, which have no "\n"
    kTooLong,  // the next line exceeds max_line_bytes (with its "\n"); reading stops
    kEnd,      // no more bytes
  };

  // NotFound if the file does not exist; other errors name the file.
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::filesystem::path& path,
                                                          std::size_t max_line_bytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  absl::StatusOr<Next> Read(std::string* line);

  // Bytes consumed by the lines returned so far (each with its "\n").
  std::uint64_t offset() const { return offset_; }

 private:
  LineReader(int fd, std::filesystem::path path, std::size_t max_line_bytes);
  absl::Status Fill();

  int fd_;
  std::filesystem::path path_;
  std::size_t max_line_bytes_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
  std::size_t end_ = 0;
  bool eof_ = false;
  std::uint64_t offset_ = 0;
};

}  // namespace cohort::audit
