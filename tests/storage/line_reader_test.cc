#include "storage/line_reader.h"

#include <fcntl.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/storage/test_util.h"
#include "tests/temp_dir.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;
using Next = LineReader::Next;

struct Read {
  std::vector<std::string> lines;
  Next last = Next::kEnd;
  std::string tail;
  std::uint64_t offset = 0;
};

Read ReadEverything(LineReader& reader) {
  Read result;
  std::string line;
  while (true) {
    absl::StatusOr<Next> next = reader.Read(&line);
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || *next != Next::kLine) {
      result.last = next.ok() ? *next : Next::kEnd;
      result.tail = line;
      result.offset = reader.offset();
      return result;
    }
    result.lines.push_back(line);
  }
}

TEST(LineReaderTest, ReturnsWholeLinesAndThenTheEnd) {
  TempDir dir;
  testing::Overwrite(dir.path() / "log", "one\n\nthree\n");
  auto reader = LineReader::Open(dir.path() / "log", 100);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const Read read = ReadEverything(**reader);
  EXPECT_EQ(read.lines, (std::vector<std::string>{"one", "", "three"}));
  EXPECT_EQ(read.last, Next::kEnd);
  EXPECT_EQ(read.offset, 11u);
}

TEST(LineReaderTest, TellsATrailingPartialLineFromAWholeOne) {
  TempDir dir;
  testing::Overwrite(dir.path() / "log", "one\ntorn");
  auto reader = LineReader::Open(dir.path() / "log", 100);
  ASSERT_TRUE(reader.ok());
  const Read read = ReadEverything(**reader);
  EXPECT_EQ(read.lines, std::vector<std::string>{"one"});
  EXPECT_EQ(read.last, Next::kPartial);
  EXPECT_EQ(read.tail, "torn");
  EXPECT_EQ(read.offset, 4u) << "the offset counts whole lines only";
}

TEST(LineReaderTest, StopsAtALineOverTheLimitCountingItsNewline) {
  TempDir dir;
  testing::Overwrite(dir.path() / "log", "12345\n123456\n");
  auto reader = LineReader::Open(dir.path() / "log", 6);
  ASSERT_TRUE(reader.ok());
  const Read read = ReadEverything(**reader);
  EXPECT_EQ(read.lines, std::vector<std::string>{"12345"});
  EXPECT_EQ(read.last, Next::kTooLong);
}

TEST(LineReaderTest, ReadsLinesThatStraddleItsBufferAndLeavesTheFileOffsetAlone) {
  TempDir dir;
  std::vector<std::string> expected;
  std::string contents;
  for (int i = 0; i < 3000; ++i) {
    expected.push_back(std::string(static_cast<std::size_t>(i % 97), 'a' + i % 26));
    contents += expected.back() + "\n";
  }
  testing::Overwrite(dir.path() / "log", contents);
  absl::StatusOr<File> file = File::Open(dir.path() / "log", O_RDONLY);
  ASSERT_TRUE(file.ok());
  LineReader reader(*file, 1000);
  const Read read = ReadEverything(reader);
  EXPECT_EQ(read.lines, expected);
  EXPECT_EQ(read.offset, contents.size());
  EXPECT_EQ(::lseek(file->fd(), 0, SEEK_CUR), 0);
}

TEST(LineReaderTest, AMissingFileIsNotFound) {
  TempDir dir;
  auto reader = LineReader::Open(dir.path() / "nope", 10);
  EXPECT_TRUE(absl::IsNotFound(reader.status())) << reader.status();
}

}  // namespace
}  // namespace cohort::storage
