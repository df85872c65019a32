#include "crypto/secret_file.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "storage/atomic_write.h"
#include "tests/temp_dir.h"

namespace cohort::crypto {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;

TEST(ReadSecretFileTest, RefusesAKeyFileThatOthersCanRead) {
  TempDir dir;
  const fs::path path = dir.path() / "key.pem";
  ASSERT_TRUE(storage::WriteFileAtomically(path, "k", 0640, storage::IfExists::kFail).ok());
  const auto refused = ReadSecretFile(path);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_NE(refused.status().message().find("0640"), std::string::npos) << refused.status();
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  const auto secret = ReadSecretFile(path);
  ASSERT_TRUE(secret.ok()) << secret.status();
  ASSERT_EQ(secret->size(), 1u);
  EXPECT_EQ(secret->span()[0], 'k');
}

TEST(ReadSecretFileTest, AMissingFileIsNotFoundAndNamed) {
  TempDir dir;
  const auto missing = ReadSecretFile(dir.path() / "absent.pem");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_NE(missing.status().message().find("absent.pem"), std::string::npos) << missing.status();
}

}  // namespace
}  // namespace cohort::crypto
