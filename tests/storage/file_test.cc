#include "storage/file.h"

#include <fcntl.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <thread>

#include "tests/storage/test_util.h"
#include "tests/temp_dir.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;
using testing::ScopedFileSizeLimit;
using testing::Slurp;

TEST(FileTest, WritesReadsTruncatesAndReportsItsSize) {
  TempDir dir;
  const fs::path path = dir.path() / "data";
  absl::StatusOr<File> file = File::Open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE(file->WriteAll("hello, world").ok());
  EXPECT_EQ(*file->Size(), 12u);
  EXPECT_EQ(*file->ReadAll(), "hello, world");

  std::string middle(5, '\0');
  absl::StatusOr<std::size_t> read =
      file->PreadAll(7, std::as_writable_bytes(std::span(middle.data(), middle.size())));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, 5u);
  EXPECT_EQ(middle, "world");
  // Past the end: fewer bytes, not an error.
  read = file->PreadAll(10, std::as_writable_bytes(std::span(middle.data(), middle.size())));
  EXPECT_EQ(*read, 2u);

  ASSERT_TRUE(file->Truncate(5).ok());
  ASSERT_TRUE(file->Sync().ok());
  ASSERT_TRUE(file->DataSync().ok());
  ASSERT_TRUE(file->Close().ok());
  EXPECT_FALSE(file->is_open());
  EXPECT_EQ(Slurp(path), "hello");
}

TEST(FileTest, ReadAllReadsAFileLargerThanOneBuffer) {
  TempDir dir;
  const fs::path path = dir.path() / "big";
  std::string contents;
  for (int i = 0; i < 100000; ++i) contents += std::to_string(i) + ",";
  testing::Overwrite(path, contents);
  absl::StatusOr<File> file = File::Open(path, O_RDONLY);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(*file->ReadAll(), contents);
}

TEST(FileTest, OpenErrorsNameTheFileAndCarryTheKindOfFailure) {
  TempDir dir;
  absl::StatusOr<File> missing = File::Open(dir.path() / "absent", O_RDONLY);
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_NE(missing.status().message().find("absent: no such file"), std::string::npos)
      << missing.status();

  testing::Overwrite(dir.path() / "present", "x");
  absl::StatusOr<File> exclusive =
      File::Open(dir.path() / "present", O_WRONLY | O_CREAT | O_EXCL, 0600);
  EXPECT_TRUE(absl::IsAlreadyExists(exclusive.status())) << exclusive.status();
}

TEST(FileTest, AFileCreatedWithAModeKeepsItThroughSetModeWhateverTheUmask) {
  TempDir dir;
  testing::ScopedUmask umask(077);
  absl::StatusOr<File> file = File::Open(dir.path() / "f", O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(testing::ModeOf(dir.path() / "f"), 0600u) << "the umask narrows open(2)'s mode";
  ASSERT_TRUE(file->SetMode(0644).ok());
  EXPECT_EQ(testing::ModeOf(dir.path() / "f"), 0644u);
}

TEST(FileTest, ASecondExclusiveLockIsUnavailableUntilTheFirstIsClosed) {
  TempDir dir;
  const fs::path path = dir.path() / "locked";
  absl::StatusOr<File> first = File::Open(path, O_RDWR | O_CREAT, 0600);
  absl::StatusOr<File> second = File::Open(path, O_RDWR);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE(first->LockExclusive().ok());
  const absl::Status refused = second->LockExclusive();
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_NE(refused.message().find(path.string()), std::string::npos) << refused;

  // A waiting lock is granted once the holder closes its file.
  absl::Status waited = absl::UnknownError("not run");
  std::thread waiter([&] { waited = second->LockExclusive(File::LockWait::kWait); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(first->Close().ok());
  waiter.join();
  EXPECT_TRUE(waited.ok()) << waited;
}

TEST(FileTest, AWriteThatHitsTheFileSizeLimitIsResourceExhaustedAndSaysHowFarItGot) {
  TempDir dir;
  const fs::path path = dir.path() / "limited";
  absl::StatusOr<File> file = File::Open(path, O_WRONLY | O_CREAT, 0600);
  ASSERT_TRUE(file.ok());
  absl::Status status;
  {
    ScopedFileSizeLimit limit(4096);
    status = file->WriteAll(std::string(10000, 'x'));
  }
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_NE(status.message().find("4096 of 10000 bytes"), std::string::npos) << status;
  EXPECT_NE(status.message().find("limited"), std::string::npos) << status;
}

TEST(FileTest, MovingHandsTheDescriptorOver) {
  TempDir dir;
  absl::StatusOr<File> file = File::Open(dir.path() / "m", O_WRONLY | O_CREAT, 0600);
  ASSERT_TRUE(file.ok());
  const int fd = file->fd();
  File moved = *std::move(file);
  EXPECT_EQ(moved.fd(), fd);
  EXPECT_EQ(moved.path(), dir.path() / "m");
  EXPECT_TRUE(moved.WriteAll("ok").ok());
}

}  // namespace
}  // namespace cohort::storage
