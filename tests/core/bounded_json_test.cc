#include "tests/hostile_json.h"
#include "core/bounded_json.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/limits.h"
#include "tests/temp_dir.h"

namespace cohort::core {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr JsonLimits kTestLimits{std::size_t{1} << 20, kMaxJsonDepth};
using ::cohort::testing::kShortMessageBytes;

using ::cohort::testing::NestedArrays;
using ::cohort::testing::NestedObjects;

TEST(BoundedJsonTest, RefusesAHundredThousandNestedArraysBeforeBuildingATree) {
  absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson(NestedArrays(100'000), kTestLimits, "job config x.json");
  ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(parsed.status().message());
  EXPECT_THAT(message, StartsWith("job config x.json: expected JSON nested at most 64 levels deep"));
  EXPECT_THAT(message, HasSubstr("level 65 (byte 64)"));
  EXPECT_THAT(message, HasSubstr("... (200000 bytes)"));
  EXPECT_THAT(message, HasSubstr("nest it less deeply"));
  EXPECT_LT(message.size(), kShortMessageBytes) << message;
}

TEST(BoundedJsonTest, RefusesAHundredThousandNestedObjects) {
  absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson(NestedObjects(100'000), kTestLimits, "audit line 3");
  ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), StartsWith("audit line 3: expected JSON nested at most 64"));
  EXPECT_LT(parsed.status().message().size(), kShortMessageBytes);
}

TEST(BoundedJsonTest, RefusesAFiftyMegabyteValueByItsLengthAndQuotesOnlyItsStart) {
  const std::string huge = "{\"a\": \"" + std::string(50'000'000, 'x') + "\"}";
  absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson(huge, kTestLimits, "value for federation.strategy");
  ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(parsed.status().message());
  EXPECT_THAT(message, StartsWith("value for federation.strategy: expected at most 1048576 bytes of JSON, got "
                                  "\"{\\\"a\\\": \\\"xxxx"));
  EXPECT_THAT(message, HasSubstr("... (50000009 bytes); shorten it"));
  EXPECT_LT(message.size(), kShortMessageBytes) << message;
}

TEST(BoundedJsonTest, ParsesNestingUpToTheLimitAndRefusesOneMore) {
  absl::StatusOr<nlohmann::json> at_limit = ParseBoundedJson(NestedObjects(kMaxJsonDepth), kTestLimits, "doc");
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  const nlohmann::json* inner = &*at_limit;
  for (int i = 0; i < kMaxJsonDepth; ++i) inner = &inner->at("a");
  EXPECT_EQ(*inner, 1);

  EXPECT_TRUE(ParseBoundedJson(NestedArrays(kMaxJsonDepth), kTestLimits, "doc").ok());
  EXPECT_FALSE(ParseBoundedJson(NestedArrays(kMaxJsonDepth + 1), kTestLimits, "doc").ok());
  EXPECT_FALSE(ParseBoundedJson(NestedObjects(kMaxJsonDepth + 1), kTestLimits, "doc").ok());
}

TEST(BoundedJsonTest, CountsDepthSideBySideNotInTotal) {
  std::string siblings = "[";
  for (int i = 0; i < 5'000; ++i) siblings += NestedArrays(kMaxJsonDepth - 1) + ",";
  siblings += "1]";
  absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson(siblings, kTestLimits, "doc");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->size(), 5'001u);
}

TEST(BoundedJsonTest, BracketsInsideStringsDoNotCount) {
  const std::string brackets(1000, '[');
  EXPECT_TRUE(ParseBoundedJson("[\"" + brackets + "\"]", kTestLimits, "doc").ok());
  // An escaped quote does not end the string...
  EXPECT_TRUE(ParseBoundedJson("[\"\\\"" + brackets + "\"]", kTestLimits, "doc").ok());
  // ...but an escaped backslash before a quote does, and the brackets after it count.
  absl::StatusOr<nlohmann::json> escaped_backslash =
      ParseBoundedJson("[\"\\\\\"," + NestedArrays(kMaxJsonDepth) + "]", kTestLimits, "doc");
  EXPECT_EQ(escaped_backslash.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BoundedJsonTest, UnbalancedClosingBracketsCannotHideDepth) {
  // Closing more than was opened must not buy room for deeper nesting later.
  const std::string text = std::string(1000, ']') + NestedArrays(kMaxJsonDepth + 1);
  EXPECT_THAT(std::string(CheckJsonBounds(text, kTestLimits, "doc").message()), HasSubstr("level 65"));
}

TEST(BoundedJsonTest, NamesTheDocumentWhenItIsNotJson) {
  absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson("{\"job\": ", kTestLimits, "job config j.json");
  ASSERT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(), "job config j.json: not valid JSON: \"{\\\"job\\\": \"");
}

TEST(BoundedJsonTest, ReadsAFileWithinTheLimit) {
  cohort::testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "ok.json";
  std::ofstream(path) << "{\"name\": \"kit\", \"nested\": " << NestedArrays(20) << "}";
  absl::StatusOr<nlohmann::json> read = ReadBoundedJsonFile(path, kStartupKitJson, "kit config");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ((*read)["name"], "kit");
}

TEST(BoundedJsonTest, RefusesAFileOverTheLimitBySizeNamingThePath) {
  cohort::testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "huge.json";
  std::ofstream(path) << "\"" << std::string(100'000, 'x') << "\"";
  absl::StatusOr<nlohmann::json> read = ReadBoundedJsonFile(path, kStartupKitJson, "kit config");
  ASSERT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(read.status().message(),
            "kit config " + path.string() + ": expected at most 65536 bytes, got 100002; shorten it");
}

TEST(BoundedJsonTest, StopsReadingAnEndlessDevice) {
  absl::StatusOr<nlohmann::json> read = ReadBoundedJsonFile("/dev/zero", kStartupKitJson, "kit config");
  ASSERT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("expected at most 65536 bytes, got more"));
}

TEST(BoundedJsonTest, RefusesADeepFileNamingThePath) {
  cohort::testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "deep.json";
  std::ofstream(path) << NestedObjects(100'000);
  absl::StatusOr<nlohmann::json> read = ReadBoundedJsonFile(path, kJobConfigJson, "job config");
  ASSERT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(read.status().message()),
              StartsWith("job config " + path.string() + ": expected JSON nested at most 64 levels deep"));
}

TEST(BoundedJsonTest, MissingFileIsNotFound) {
  cohort::testing::TempDir dir;
  absl::StatusOr<nlohmann::json> read = ReadBoundedJsonFile(dir.path() / "absent.json", kJobConfigJson, "job config");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("cannot open job config"));
}

}  // namespace
}  // namespace cohort::core
