#include "storage/append_log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/sha256.h"
#include "tests/storage/test_util.h"
#include "tests/temp_dir.h"

namespace cohort::storage {
namespace {

namespace fs = std::filesystem;
using cohort::testing::TempDir;
using testing::Slurp;

// A chain like the privacy ledger's: SHA-256 of the line without its newline.
AppendLogOptions TestOptions() {
  AppendLogOptions options;
  options.kind = "test log";
  options.mode = 0640;
  options.max_line_bytes = 64;
  options.chain_hash = [](std::string_view line) { return Sha256Hex(line); };
  return options;
}

absl::StatusOr<std::unique_ptr<AppendLog>> OpenAccepting(
    const fs::path& path, std::vector<std::string>* seen = nullptr,
    std::vector<std::string>* prevs = nullptr) {
  return AppendLog::Open(path, TestOptions(), [&](const LogLine& line) {
    if (seen != nullptr) seen->emplace_back(line.text);
    if (prevs != nullptr) prevs->emplace_back(line.prev_hash);
    return absl::OkStatus();
  });
}

TEST(AppendLogTest, CreatesTheFileWithExactlyItsModeAndAnEmptyChain) {
  TempDir dir;
  testing::ScopedUmask umask(077);
  auto log = OpenAccepting(dir.path() / "log");
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE((*log)->created());
  EXPECT_EQ((*log)->line_count(), 0u);
  EXPECT_EQ((*log)->head_hash(), kZeroChainHash);
  EXPECT_EQ(testing::ModeOf(dir.path() / "log"), 0640u);
}

TEST(AppendLogTest, AppendsLinesAndHandsEachBackToTheValidatorWithItsPrevOnReopen) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  {
    auto log = OpenAccepting(path);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append("first").ok());
    ASSERT_TRUE((*log)->Append("second").ok());
    EXPECT_EQ((*log)->head_hash(), Sha256Hex("second"));
    EXPECT_EQ((*log)->size(), 13u);
  }
  EXPECT_EQ(Slurp(path), "first\nsecond\n");
  std::vector<std::string> seen, prevs;
  auto log = OpenAccepting(path, &seen, &prevs);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE((*log)->created());
  EXPECT_EQ(seen, (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(prevs, (std::vector<std::string>{std::string(kZeroChainHash), Sha256Hex("first")}));
  EXPECT_EQ((*log)->line_count(), 2u);
  EXPECT_EQ((*log)->head_hash(), Sha256Hex("second"));
  EXPECT_EQ((*log)->cut_tail_bytes(), 0u);
}

TEST(AppendLogTest, CutsATornTailAndReportsIt) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  testing::Overwrite(path, "whole\ntorn-by-a-cra");
  auto log = OpenAccepting(path);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->cut_tail_bytes(), 13u);
  EXPECT_EQ((*log)->line_count(), 1u);
  EXPECT_EQ(Slurp(path), "whole\n");
  ASSERT_TRUE((*log)->Append("next").ok());
  EXPECT_EQ(Slurp(path), "whole\nnext\n");
}

TEST(AppendLogTest, ALineTheValidatorRefusesStopsOpenAndLeavesTheFileUntouched) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  const std::string contents = "good\nbad\nafter\ntorn";
  testing::Overwrite(path, contents);
  auto log = AppendLog::Open(path, TestOptions(), [](const LogLine& line) {
    if (line.text == "bad")
      return absl::DataLossError(absl::StrCat("line ", line.number, " is bad"));
    return absl::OkStatus();
  });
  EXPECT_TRUE(absl::IsDataLoss(log.status())) << log.status();
  EXPECT_EQ(log.status().message(), "line 2 is bad");
  EXPECT_EQ(Slurp(path), contents) << "not even the torn tail may be cut from a log that fails";
}

TEST(AppendLogTest, ALineOverTheLimitOnDiskIsDataLossNamingTheLine) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  testing::Overwrite(path, "short\n" + std::string(100, 'x') + "\n");
  auto log = OpenAccepting(path);
  EXPECT_TRUE(absl::IsDataLoss(log.status())) << log.status();
  EXPECT_NE(log.status().message().find("line 2: longer than 64 bytes"), std::string::npos)
      << log.status();
}

TEST(AppendLogTest, RefusesLinesItCouldNotReadBackAndStaysUsable) {
  TempDir dir;
  auto log = OpenAccepting(dir.path() / "log");
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE(absl::IsInvalidArgument((*log)->Append("two\nlines")));
  EXPECT_TRUE(absl::IsInvalidArgument((*log)->Append(std::string(64, 'x'))));
  EXPECT_TRUE((*log)->Append(std::string(63, 'x')).ok());
  EXPECT_EQ((*log)->line_count(), 1u);
}

TEST(AppendLogTest, ASecondWriterIsUnavailableUntilTheFirstCloses) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  auto first = OpenAccepting(path);
  ASSERT_TRUE(first.ok());
  auto second = OpenAccepting(path);
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_NE(second.status().message().find("test log"), std::string::npos) << second.status();
  first->reset();
  EXPECT_TRUE(OpenAccepting(path).ok());
}

TEST(AppendLogTest, AMissingDirectoryIsNotFound) {
  TempDir dir;
  auto log = OpenAccepting(dir.path() / "absent" / "log");
  EXPECT_TRUE(absl::IsNotFound(log.status())) << log.status();
}

TEST(AppendLogTest, AFailedWriteIsCutBackAndTheLogStaysUsable) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  AppendLogOptions options = TestOptions();
  options.max_line_bytes = 1 << 16;
  auto log = AppendLog::Open(path, options, nullptr);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append("kept").ok());
  absl::Status refused;
  {
    // Room for part of the next line only: the write stops midway.
    testing::ScopedFileSizeLimit limit(100);
    refused = (*log)->Append(std::string(1000, 'y'));
  }
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_EQ(Slurp(path), "kept\n") << "the partial line must be cut back off";
  EXPECT_EQ((*log)->line_count(), 1u);
  ASSERT_TRUE((*log)->Append("after").ok()) << "a full disk does not poison the log";
  EXPECT_EQ(Slurp(path), "kept\nafter\n");
  EXPECT_EQ((*log)->head_hash(), Sha256Hex("after"));
}

TEST(AppendLogTest, AReadOnlyLogCannotBeOpenedForAppending) {
  TempDir dir;
  const fs::path path = dir.path() / "log";
  { ASSERT_TRUE(OpenAccepting(path).ok()); }
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0444), 0);
  const int code = testing::RunUnprivileged(
      [&] { return static_cast<int>(OpenAccepting(path).status().code()); });
  EXPECT_EQ(code, static_cast<int>(absl::StatusCode::kPermissionDenied));
}

}  // namespace
}  // namespace cohort::storage
