#include "audit/bundle.h"

#include <gtest/gtest.h>

#include <string>

#include "audit/reader.h"
#include "tests/audit/test_util.h"

namespace cohort::audit {
namespace {

using testing::KeyFromFill;
using testing::ReadFile;
using testing::ReadLines;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteLines;

const absl::Time kExportTime = absl::FromUnixMillis(1717243200042);  // 2024-06-01T12:00:00.042Z

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override { testing::WriteSampleLog(log_); }

  BundleVerification Verify(std::uint8_t key_fill = 1,
                            std::optional<std::string> head = std::nullopt,
                            std::optional<std::uint64_t> count = std::nullopt) {
    absl::StatusOr<BundleVerification> result =
        VerifyAuditBundle(bundle_, KeyFromFill(key_fill).public_key(), head, count);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : BundleVerification{};
  }

  // Replaces the first occurrence of `from` in the bundle file with `to`.
  void EditBundle(const std::string& from, const std::string& to) {
    std::string text = ReadFile(bundle_);
    const std::size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    WriteFile(bundle_, text);
  }

  TempDir dir_;
  const std::filesystem::path log_ = dir_ / "audit.log";
  const std::filesystem::path bundle_ = dir_ / "audit.bundle.json";
};

TEST_F(BundleTest, AnExportedBundleHoldsTheLogAndVerifies) {
  absl::StatusOr<ExportSummary> summary =
      ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->entry_count, 6u);
  EXPECT_EQ(summary->head_hash, LineHash(ReadLines(log_).back()));
  EXPECT_EQ(summary->exported_at, "2024-06-01T12:00:00.042Z");

  const nlohmann::json bundle = nlohmann::json::parse(ReadFile(bundle_));
  EXPECT_EQ(bundle["format"], "cohort.audit.bundle.v1");
  EXPECT_EQ(bundle["source"], "audit.log");
  EXPECT_EQ(bundle["public_key"], KeyFromFill(1).public_key().ToHex());
  EXPECT_EQ(bundle["lines"].get<std::vector<std::string>>(), ReadLines(log_));

  const BundleVerification result = Verify(1, summary->head_hash, 6);
  EXPECT_TRUE(result.ok()) << result.Summary();
  EXPECT_EQ(result.exported_at, "2024-06-01T12:00:00.042Z");
  EXPECT_EQ(result.chain.entry_count, 6u);
  EXPECT_EQ(result.Summary(),
            "bundle exported 2024-06-01T12:00:00.042Z from audit.log: valid: 6 "
            "entries, head " +
                summary->head_hash);
}

TEST_F(BundleTest, ExportRefusesALogThatDoesNotVerify) {
  std::vector<std::string> lines = ReadLines(log_);
  std::swap(lines[1], lines[2]);
  WriteLines(log_, lines);
  absl::StatusOr<ExportSummary> summary =
      ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(summary.status().message().find("line 2 (seq 2): prev hash mismatch"),
            std::string::npos)
      << summary.status();
  EXPECT_FALSE(std::filesystem::exists(bundle_));
}

TEST_F(BundleTest, ExportNeverReplacesAnExistingFile) {
  WriteFile(bundle_, "keep me");
  EXPECT_EQ(ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(bundle_), "keep me");
}

TEST_F(BundleTest, ExportLeavesOutATrailingPartialLine) {
  WriteFile(log_, ReadFile(log_) + "{\"seq\":6,");
  absl::StatusOr<ExportSummary> summary =
      ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_TRUE(summary->skipped_partial_line);
  EXPECT_EQ(summary->entry_count, 6u);
  EXPECT_TRUE(Verify().ok());
}

TEST_F(BundleTest, AnyChangeToTheBundleBreaksItsSignature) {
  ASSERT_TRUE(ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime).ok());
  EditBundle("2024-06-01T12:00:00.042Z", "2024-06-01T12:00:00.043Z");
  const BundleVerification result = Verify();
  EXPECT_FALSE(result.ok());
  ASSERT_TRUE(result.bundle_failure.has_value());
  EXPECT_NE(result.bundle_failure->find("bundle signature does not verify"), std::string::npos)
      << result.Summary();
}

TEST_F(BundleTest, ABundleChecksAgainstTheKeyGivenNotTheKeyItNames) {
  ASSERT_TRUE(ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime).ok());
  const BundleVerification result = Verify(/*key_fill=*/2);
  EXPECT_FALSE(result.ok());
  ASSERT_TRUE(result.bundle_failure.has_value());
  EXPECT_NE(result.bundle_failure->find("the bundle says it was signed by " +
                                        KeyFromFill(1).public_key().ToHex()),
            std::string::npos)
      << result.Summary();
}

TEST_F(BundleTest, ABundleExportedAfterEntriesWereCutFailsThePinnedCount) {
  // The key holder cuts the last two entries and exports: the bundle is signed
  // and its chain is whole, so only the pins from before can tell.
  std::vector<std::string> lines = ReadLines(log_);
  const std::string pinned_head = LineHash(lines.back());
  lines.resize(4);
  WriteLines(log_, lines);
  ASSERT_TRUE(ExportAuditBundle(log_, KeyFromFill(1), bundle_, kExportTime).ok());
  EXPECT_TRUE(Verify().ok());
  const BundleVerification pinned = Verify(1, pinned_head, 6);
  EXPECT_FALSE(pinned.ok());
  ASSERT_TRUE(pinned.chain.failure.has_value());
  EXPECT_EQ(pinned.chain.failure->problem, ChainProblem::kCountShort) << pinned.Summary();
}

TEST_F(BundleTest, ALogFileIsNotABundle) {
  std::filesystem::copy_file(log_, bundle_);
  const BundleVerification result = Verify();
  EXPECT_FALSE(result.ok());
  ASSERT_TRUE(result.bundle_failure.has_value());
  EXPECT_NE(result.bundle_failure->find("not a signed audit bundle"), std::string::npos)
      << result.Summary();
}

TEST_F(BundleTest, VerifyingAMissingBundleIsAnError) {
  absl::StatusOr<BundleVerification> result =
      VerifyAuditBundle(dir_ / "none.json", KeyFromFill(1).public_key());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cohort::audit
