#include "crypto/atomic_file.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/temp_dir.h"

namespace cohort::crypto {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;

mode_t ModeOf(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

int EntryCount(const fs::path& dir) {
  return static_cast<int>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

// Restores the process umask when the test ends.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(previous_); }

 private:
  mode_t previous_;
};

TEST(WriteFileAtomicallyTest, WritesTheBytesWithExactlyTheRequestedModeWhateverTheUmask) {
  TempDir dir;
  {
    ScopedUmask open_umask(0);
    ASSERT_TRUE(WriteFileAtomically(dir.path() / "key.pem", "secret", kSecretFileMode,
                                    IfExists::kFail).ok());
  }
  {
    ScopedUmask strict_umask(077);
    ASSERT_TRUE(WriteFileAtomically(dir.path() / "cert.pem", "public", kPublicFileMode,
                                    IfExists::kFail).ok());
  }
  EXPECT_EQ(ModeOf(dir.path() / "key.pem"), 0600u);
  EXPECT_EQ(ModeOf(dir.path() / "cert.pem"), 0644u);
  EXPECT_EQ(*ReadTextFile(dir.path() / "key.pem"), "secret");
  EXPECT_EQ(EntryCount(dir.path()), 2) << "a temporary file was left behind";
}

TEST(WriteFileAtomicallyTest, RefusesToOverwriteUnlessToldToReplace) {
  TempDir dir;
  const fs::path path = dir.path() / "crl.pem";
  ASSERT_TRUE(WriteFileAtomically(path, "one", kPublicFileMode, IfExists::kFail).ok());
  const absl::Status refused = WriteFileAtomically(path, "two", kPublicFileMode, IfExists::kFail);
  EXPECT_TRUE(absl::IsAlreadyExists(refused)) << refused;
  EXPECT_EQ(*ReadTextFile(path), "one");
  ASSERT_TRUE(WriteFileAtomically(path, "three", kPublicFileMode, IfExists::kReplace).ok());
  EXPECT_EQ(*ReadTextFile(path), "three");
  EXPECT_EQ(EntryCount(dir.path()), 1);
}

TEST(ReadSecretFileTest, RefusesAKeyFileThatOthersCanRead) {
  TempDir dir;
  const fs::path path = dir.path() / "key.pem";
  ASSERT_TRUE(WriteFileAtomically(path, "k", 0640, IfExists::kFail).ok());
  const auto refused = ReadSecretFile(path);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("0640"), std::string::npos) << refused.status();
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  const auto secret = ReadSecretFile(path);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(secret->size(), 1u);
}

TEST(StagingDirectoryTest, AnUnpublishedDirectoryIsRemovedWithItsContents) {
  TempDir dir;
  {
    auto staging = StagingDirectory::Create(dir.path(), "kit");
    ASSERT_TRUE(staging.ok()) << staging.status();
    EXPECT_EQ(ModeOf(staging->path()), 0700u);
    ASSERT_TRUE(WriteFileAtomically(staging->path() / "key.pem", "k", kSecretFileMode,
                                    IfExists::kFail).ok());
  }
  EXPECT_EQ(EntryCount(dir.path()), 0);
}

TEST(StagingDirectoryTest, PublishRenamesIntoPlaceButNeverOverAnExistingDirectory) {
  TempDir dir;
  auto first = StagingDirectory::Create(dir.path(), "kit");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(first->Publish().ok());
  EXPECT_TRUE(fs::is_directory(dir.path() / "kit"));

  // Even an empty directory, which plain rename(2) would silently replace.
  auto second = StagingDirectory::Create(dir.path(), "kit");
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(WriteFileAtomically(second->path() / "marker", "x", kPublicFileMode,
                                  IfExists::kFail).ok());
  const absl::Status refused = second->Publish();
  EXPECT_TRUE(absl::IsAlreadyExists(refused)) << refused;
  EXPECT_FALSE(fs::exists(dir.path() / "kit" / "marker"));
}

}  // namespace
}  // namespace cohort::crypto
