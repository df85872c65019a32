// Text as language-model data (training/text_data.h) and its split by file
// (training/partition.h), on files written here and on the fortunes package's files.
#include "training/text_data.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/temp_dir.h"
#include "training/partition.h"

namespace cohort::training {
namespace {

using ::testing::HasSubstr;
using cohort::testing::TempDir;

constexpr char kFortunes[] = "/usr/share/games/fortunes";

void Write(const std::filesystem::path& path, const std::string& text) { std::ofstream(path) << text; }

TEST(ByteTokenizerTest, BytesRoundTripAndSpecialIdsAreDropped) {
  const std::string text = "Caf\xc3\xa9 \x01\xff!";
  std::vector<int64_t> ids = ByteTokenizer::Encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[3], 0xc3);
  EXPECT_EQ(ids[7], 0xff);
  ids.insert(ids.begin(), ByteTokenizer::kBos);
  ids.push_back(ByteTokenizer::kEos);
  EXPECT_EQ(ByteTokenizer::Decode(ids), text);
}

TEST(TextWindowsTest, TargetsAreTheInputsShiftedByOneAcrossDocuments) {
  TempDir dir;
  Write(dir.path() / "a", "ab\n%\ncd\n%\n");  // two fortunes: BOS a b \n EOS BOS c d \n EOS
  TextDataOptions options;
  options.path = dir.path().string();
  options.sequence_length = 4;
  options.test_fraction = 0;
  absl::StatusOr<Dataset> data = ReadTextWindows(options, Split::kTrain);
  ASSERT_TRUE(data.ok()) << data.status();
  const std::vector<int64_t> stream = {256, 'a', 'b', '\n', 257, 256, 'c', 'd', '\n', 257};
  ASSERT_EQ(data->size(), 2u);  // (10 - 1) / 4 windows
  EXPECT_EQ(data->example_shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(data->label_shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(data->num_classes, ByteTokenizer::kVocabSize);
  for (size_t w = 0; w < 2; ++w) {
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(data->features[w * 4 + i], static_cast<float>(stream[w * 4 + i])) << w << " " << i;
      EXPECT_EQ(data->labels[w * 4 + i], stream[w * 4 + i + 1]) << w << " " << i;
    }
  }
  EXPECT_EQ(data->groups, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(data->group_names, (std::vector<std::string>{"a"}));
  // Subset keeps a window's T labels together.
  const Dataset second = data->Subset({1});
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second.labels, (std::vector<int64_t>{256, 'c', 'd', '\n'}));
}

TEST(TextWindowsTest, HeldOutWindowsAreEachFilesLastAndNeverInTraining) {
  TempDir dir;
  Write(dir.path() / "one", std::string(400, 'x'));
  Write(dir.path() / "two", std::string(400, 'y'));
  Write(dir.path() / "two.dat", "index, not text");
  TextDataOptions options;
  options.path = dir.path().string();
  options.sequence_length = 10;
  absl::StatusOr<Dataset> train = ReadTextWindows(options, Split::kTrain);
  absl::StatusOr<Dataset> test = ReadTextWindows(options, Split::kTest);
  ASSERT_TRUE(train.ok()) << train.status();
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(train->group_names, (std::vector<std::string>{"one", "two"}));  // *.dat skipped
  // 402 tokens per file: 40 windows, the last 4 held out.
  EXPECT_EQ(train->size(), 72u);
  EXPECT_EQ(test->size(), 8u);
  EXPECT_EQ(test->features.front(), 'x');  // window 36 of file one
  EXPECT_EQ(test->labels.back(), 'y');     // window 39 of file two
}

TEST(TextWindowsTest, BadInputsAreRefusedNamingTheFix) {
  TempDir dir;
  Write(dir.path() / "short", "hi");
  TextDataOptions options;
  options.path = dir.path().string();
  options.sequence_length = 64;
  absl::StatusOr<Dataset> none = ReadTextWindows(options, Split::kTrain);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("lower data.sequence_length"));
  options.files = {"../etc/passwd"};
  EXPECT_THAT(std::string(ReadTextWindows(options, Split::kTrain).status().message()),
              HasSubstr("data.files[0]: expected a file name"));
  options.files = {"missing"};
  EXPECT_FALSE(ReadTextWindows(options, Split::kTrain).ok());
  options.files = {};
  options.path = (dir.path() / "nowhere").string();
  EXPECT_THAT(std::string(ReadTextWindows(options, Split::kTrain).status().message()), HasSubstr("apt-get install fortunes"));
}

TEST(PartitionByFileTest, EachSiteHoldsWholeFiles) {
  Dataset data;
  data.example_shape = {2};
  data.label_shape = {2};
  data.groups = {0, 0, 1, 2, 2, 2, 3};
  data.group_names = {"a", "b", "c", "d"};
  data.features.assign(14, 0);
  data.labels.assign(14, 0);
  absl::StatusOr<Shards> shards = PartitionDataset("by_file", data, 4, 1);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(*shards, (Shards{{0, 1}, {2}, {3, 4, 5}, {6}}));
  absl::StatusOr<Shards> two = PartitionDataset("by_file", data, 2, 1);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(*two, (Shards{{0, 1, 3, 4, 5}, {2, 6}}));
  EXPECT_THAT(std::string(PartitionDataset("by_file", data, 5, 1).status().message()),
              HasSubstr("4 file(s) for 5 sites"));
  EXPECT_THAT(std::string(PartitionDataset("dirichlet:0.5", data, 2, 1).status().message()),
              HasSubstr("use \"iid\" or \"by_file\""));
}

TEST(TextWindowsTest, TheFortunesPackageGivesOneCategoryPerFile) {
  if (!std::filesystem::exists(kFortunes)) GTEST_SKIP() << kFortunes << " is missing: apt-get install fortunes";
  TextDataOptions options;
  options.path = kFortunes;
  options.files = {"computers", "science", "food", "love"};
  absl::StatusOr<Dataset> data = ReadTextWindows(options, Split::kTrain);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_GT(data->size(), 3000u);
  absl::StatusOr<Shards> shards = PartitionDataset("by_file", *data, 4, 7);
  ASSERT_TRUE(shards.ok());
  for (size_t site = 0; site < 4; ++site) {
    std::set<int64_t> files;
    for (size_t row : (*shards)[site]) files.insert(data->groups[row]);
    EXPECT_EQ(files, (std::set<int64_t>{static_cast<int64_t>(site)}));
  }
}

}  // namespace
}  // namespace cohort::training
