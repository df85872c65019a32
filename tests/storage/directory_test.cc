#include "storage/directory.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "storage/atomic_write.h"
#include "tests/storage/test_util.h"
#include "tests/temp_dir.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;
using testing::EntriesOf;
using testing::ModeOf;

TEST(StagingDirectoryTest, AnUnpublishedDirectoryIsRemovedWithItsContents) {
  TempDir dir;
  {
    auto staging = StagingDirectory::Create(dir.path(), "kit");
    ASSERT_TRUE(staging.ok()) << staging.status();
    EXPECT_EQ(ModeOf(staging->path()), 0700u);
    EXPECT_EQ(staging->final_path(), dir.path() / "kit");
    ASSERT_TRUE(WriteFileAtomically(staging->path() / "key.pem", "k", kSecretFileMode,
                                    IfExists::kFail).ok());
  }
  EXPECT_TRUE(EntriesOf(dir.path()).empty());
}

TEST(StagingDirectoryTest, PublishRenamesIntoPlaceButNeverOverAnExistingDirectory) {
  TempDir dir;
  auto first = StagingDirectory::Create(dir.path(), "kit");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(first->Publish().ok());
  EXPECT_TRUE(fs::is_directory(dir.path() / "kit"));
  EXPECT_TRUE(absl::IsFailedPrecondition(first->Publish()));

  // Even an empty directory, which plain rename(2) would silently replace.
  auto second = StagingDirectory::Create(dir.path(), "kit");
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(WriteFileAtomically(second->path() / "marker", "x", kPublicFileMode,
                                  IfExists::kFail).ok());
  const absl::Status refused = second->Publish();
  EXPECT_TRUE(absl::IsAlreadyExists(refused)) << refused;
  EXPECT_FALSE(fs::exists(dir.path() / "kit" / "marker"));
}

TEST(RenameNoReplaceTest, RenamesAFileOnlyWhereNothingIs) {
  TempDir dir;
  testing::Overwrite(dir.path() / "a", "a");
  testing::Overwrite(dir.path() / "b", "b");
  const absl::Status refused = RenameNoReplace(dir.path() / "a", dir.path() / "b");
  EXPECT_TRUE(absl::IsAlreadyExists(refused)) << refused;
  EXPECT_EQ(testing::Slurp(dir.path() / "b"), "b");
  ASSERT_TRUE(RenameNoReplace(dir.path() / "a", dir.path() / "c").ok());
  EXPECT_EQ(EntriesOf(dir.path()), (std::vector<std::string>{"b", "c"}));
}

TEST(SyncDirectoryTest, SyncsADirectoryAndNamesAMissingOne) {
  TempDir dir;
  EXPECT_TRUE(SyncDirectory(dir.path()).ok());
  EXPECT_TRUE(SyncParentDirectory(dir.path() / "file-to-be").ok());
  const absl::Status missing = SyncDirectory(dir.path() / "gone");
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
  EXPECT_NE(missing.message().find("gone"), std::string::npos) << missing;
  EXPECT_EQ(ParentDirectory("bare-name"), fs::path("."));
}

}  // namespace
}  // namespace cohort::storage
