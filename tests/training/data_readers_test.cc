#include "training/data_readers.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/temp_dir.h"

namespace cohort::training {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using cohort::testing::TempDir;

const std::string kFashionMnistDir = COHORT_FASHION_MNIST_DIR;

void WriteFile(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  ASSERT_TRUE(out.good()) << path;
}

// Reading the 60,000 training images takes a moment: read both splits once for the suite.
class FashionMnistTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Dataset> train = ReadFashionMnist(kFashionMnistDir, Split::kTrain);
    absl::StatusOr<Dataset> test = ReadFashionMnist(kFashionMnistDir, Split::kTest);
    train_status_ = new absl::Status(train.status());
    test_status_ = new absl::Status(test.status());
    if (train.ok()) train_ = new Dataset(std::move(*train));
    if (test.ok()) test_ = new Dataset(std::move(*test));
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
    delete train_status_;
    delete test_status_;
  }
  void SetUp() override {
    ASSERT_TRUE(train_status_->ok()) << *train_status_;
    ASSERT_TRUE(test_status_->ok()) << *test_status_;
  }

  static Dataset* train_;
  static Dataset* test_;
  static absl::Status* train_status_;
  static absl::Status* test_status_;
};
Dataset* FashionMnistTest::train_ = nullptr;
Dataset* FashionMnistTest::test_ = nullptr;
absl::Status* FashionMnistTest::train_status_ = nullptr;
absl::Status* FashionMnistTest::test_status_ = nullptr;

TEST_F(FashionMnistTest, HasSixtyThousandTrainingAndTenThousandTestExamplesOf1x28x28) {
  EXPECT_EQ(train_->size(), 60000u);
  EXPECT_EQ(test_->size(), 10000u);
  for (const Dataset* d : {train_, test_}) {
    EXPECT_EQ(d->example_shape, (std::vector<int64_t>{1, 28, 28}));
    EXPECT_EQ(d->example_size(), 784u);
    EXPECT_EQ(d->features.size(), d->size() * 784);
    EXPECT_EQ(d->num_classes, 10);
  }
}

TEST_F(FashionMnistTest, PixelsAreScaledToTheUnitInterval) {
  for (const Dataset* d : {train_, test_}) {
    const auto [lo, hi] = std::minmax_element(d->features.begin(), d->features.end());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f) << "255 must map to exactly 1";
  }
  // The data set's published mean pixel (used by the models' normalize layer) is 0.286.
  double sum = 0;
  for (float p : train_->features) sum += p;
  EXPECT_NEAR(sum / static_cast<double>(train_->features.size()), 0.286, 0.001);
}

TEST_F(FashionMnistTest, LabelsAreInRangeAndBalanced) {
  std::vector<int> train_counts(10, 0), test_counts(10, 0);
  for (int64_t l : train_->labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++train_counts[static_cast<size_t>(l)];
  }
  for (int64_t l : test_->labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++test_counts[static_cast<size_t>(l)];
  }
  EXPECT_EQ(train_counts, std::vector<int>(10, 6000));
  EXPECT_EQ(test_counts, std::vector<int>(10, 1000));
  // The first training label of Fashion-MNIST is 9 (ankle boot); the first test label too.
  EXPECT_EQ(train_->labels[0], 9);
  EXPECT_EQ(test_->labels[0], 9);
}

TEST_F(FashionMnistTest, HeadAndSubsetCopyTheRightRows) {
  const Dataset head = train_->Head(100);
  ASSERT_EQ(head.size(), 100u);
  EXPECT_EQ(head.example_shape, train_->example_shape);
  EXPECT_TRUE(std::equal(head.features.begin(), head.features.end(), train_->features.begin()));
  const Dataset subset = train_->Subset({59999, 0});
  ASSERT_EQ(subset.size(), 2u);
  EXPECT_EQ(subset.labels[0], train_->labels[59999]);
  EXPECT_TRUE(std::equal(subset.features.begin(), subset.features.begin() + 784,
                         train_->features.begin() + 59999 * 784));
  const Dataset small = test_->Head(3);
  EXPECT_EQ(small.Head(0).size(), 3u) << "0 means all";
  EXPECT_EQ(small.Head(10).size(), 3u) << "more than there are means all";
}

TEST(FashionMnistFilesTest, AMissingDirectoryIsNotFoundNamingTheFile) {
  absl::StatusOr<Dataset> d = ReadFashionMnist("/nonexistent/fashion", Split::kTrain);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("/nonexistent/fashion/train-images-idx3-ubyte.gz"));
  absl::StatusOr<Dataset> t = ReadFashionMnist("/nonexistent/fashion", Split::kTest);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("t10k-images-idx3-ubyte.gz"));
}

TEST(FashionMnistFilesTest, AMissingLabelFileIsNamed) {
  TempDir dir;
  fs::create_symlink(fs::path(kFashionMnistDir) / "t10k-images-idx3-ubyte.gz", dir.path() / "t10k-images-idx3-ubyte.gz");
  absl::StatusOr<Dataset> d = ReadFashionMnist(dir.path().string(), Split::kTest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("t10k-labels-idx1-ubyte.gz"));
}

TEST(FashionMnistFilesTest, GarbageInPlaceOfTheFilesIsAnError) {
  TempDir dir;
  WriteFile(dir.path() / "t10k-images-idx3-ubyte.gz", std::string(5000, '\x5a'));
  WriteFile(dir.path() / "t10k-labels-idx1-ubyte.gz", "not gzip at all");
  absl::StatusOr<Dataset> d = ReadFashionMnist(dir.path().string(), Split::kTest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("t10k-images-idx3-ubyte.gz"));
}

TEST(FashionMnistFilesTest, ATruncatedGzipFileIsAnError) {
  TempDir dir;
  std::ifstream in(fs::path(kFashionMnistDir) / "t10k-images-idx3-ubyte.gz", std::ios::binary);
  std::string head(100000, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  ASSERT_EQ(in.gcount(), 100000);
  WriteFile(dir.path() / "t10k-images-idx3-ubyte.gz", head);
  fs::create_symlink(fs::path(kFashionMnistDir) / "t10k-labels-idx1-ubyte.gz", dir.path() / "t10k-labels-idx1-ubyte.gz");
  absl::StatusOr<Dataset> d = ReadFashionMnist(dir.path().string(), Split::kTest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(dir.path().string()));
}

TEST(FashionMnistFilesTest, ACorruptedGzipStreamIsDataLossNamingTheFile) {
  TempDir dir;
  std::ifstream in(fs::path(kFashionMnistDir) / "t10k-labels-idx1-ubyte.gz", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 3000u);
  for (size_t i = 1000; i < 1010; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x55);
  WriteFile(dir.path() / "t10k-labels-idx1-ubyte.gz", bytes);
  fs::create_symlink(fs::path(kFashionMnistDir) / "t10k-images-idx3-ubyte.gz", dir.path() / "t10k-images-idx3-ubyte.gz");
  absl::StatusOr<Dataset> d = ReadFashionMnist(dir.path().string(), Split::kTest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("t10k-labels-idx1-ubyte.gz"));
}

TEST(FashionMnistFilesTest, ImageAndLabelFilesOfDifferentSplitsAreRefused) {
  TempDir dir;
  fs::create_symlink(fs::path(kFashionMnistDir) / "t10k-images-idx3-ubyte.gz", dir.path() / "t10k-images-idx3-ubyte.gz");
  fs::create_symlink(fs::path(kFashionMnistDir) / "train-labels-idx1-ubyte.gz",
                     dir.path() / "t10k-labels-idx1-ubyte.gz");
  absl::StatusOr<Dataset> d = ReadFashionMnist(dir.path().string(), Split::kTest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("disagree on size"));
}

TEST(FashionMnistFilesTest, LabelFileInPlaceOfImagesIsRefusedByItsMagic) {
  TempDir dir;
  fs::create_symlink(fs::path(kFashionMnistDir) / "t10k-labels-idx1-ubyte.gz", dir.path() / "t10k-images-idx3-ubyte.gz");
  fs::create_symlink(fs::path(kFashionMnistDir) / "t10k-labels-idx1-ubyte.gz", dir.path() / "t10k-labels-idx1-ubyte.gz");
  absl::StatusOr<Dataset> d = ReadFashionMnist(dir.path().string(), Split::kTest);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("not an IDX3 image file"));
}

class CsvTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& contents) {
    const fs::path path = dir_.path() / name;
    WriteFile(path, contents);
    return path.string();
  }
  TempDir dir_;
};

TEST_F(CsvTest, ReadsIntegerLabelsAndNumericFeatures) {
  const std::string path = Write("a.csv",
                                 "x1,label,x2\n"
                                 "1.5,0,-2\n"
                                 "0,2,3e2\n"
                                 "\n"
                                 " 4 , 1 , 0.25 \r\n");
  absl::StatusOr<Dataset> d = ReadCsv(path, "label");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{0, 2, 1}));
  EXPECT_EQ(d->features, (std::vector<float>{1.5f, -2, 0, 300, 4, 0.25f}));
  EXPECT_EQ(d->num_classes, 3);
}

TEST_F(CsvTest, MapsStringLabelsToTheirSortedRank) {
  const std::string path = Write("b.csv",
                                 "income,age,hours\n"
                                 ">50K,39,40\n"
                                 "<=50K,50,13\n"
                                 "<=50K,38,40\n"
                                 "unknown,53,40\n");
  absl::StatusOr<Dataset> d = ReadCsv(path, "income");
  ASSERT_TRUE(d.ok()) << d.status();
  // Sorted: "<=50K" < ">50K" < "unknown".
  EXPECT_EQ(d->labels, (std::vector<int64_t>{1, 0, 0, 2}));
  EXPECT_EQ(d->num_classes, 3);
  EXPECT_EQ(d->features, (std::vector<float>{39, 40, 50, 13, 38, 40, 53, 40}));
}

TEST_F(CsvTest, ANonNumericFeatureNamesTheLineAndColumn) {
  const std::string path = Write("c.csv",
                                 "label,x1,x2\n"
                                 "0,1,2\n"
                                 "1,3,abc\n");
  absl::StatusOr<Dataset> d = ReadCsv(path, "label");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(path + ":3: column \"x2\" is not a number: \"abc\""));
}

TEST_F(CsvTest, AMissingLabelColumnIsNamed) {
  const std::string path = Write("d.csv", "target,x1\n0,1\n");
  absl::StatusOr<Dataset> d = ReadCsv(path, "label");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("no column named \"label\""));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(path));
}

TEST_F(CsvTest, RaggedRowsAreRefusedWithTheLineAndFieldCounts) {
  const std::string short_row = Write("e.csv", "label,x1,x2\n0,1,2\n1,2\n");
  absl::StatusOr<Dataset> d = ReadCsv(short_row, "label");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(short_row + ":3: expected 3 fields, got 2"));
  const std::string long_row = Write("f.csv", "label,x1\n0,1,2\n");
  absl::StatusOr<Dataset> l = ReadCsv(long_row, "label");
  ASSERT_FALSE(l.ok());
  EXPECT_THAT(std::string(l.status().message()), HasSubstr(long_row + ":2: expected 2 fields, got 3"));
}

TEST_F(CsvTest, MissingAndEmptyFilesAreRefused) {
  EXPECT_EQ(ReadCsv((dir_.path() / "absent.csv").string(), "label").status().code(), absl::StatusCode::kNotFound);
  const std::string empty = Write("g.csv", "");
  absl::StatusOr<Dataset> d = ReadCsv(empty, "label");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("empty file"));
}

TEST_F(CsvTest, ReadDatasetDispatchesOnTheDatasetName) {
  const std::string path = Write("h.csv", "y,x\n1,2\n0,3\n");
  absl::StatusOr<Dataset> d = ReadDataset("csv", path, Split::kTrain, "y");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->labels, (std::vector<int64_t>{1, 0}));
  absl::StatusOr<Dataset> bad = ReadDataset("cifar10", path, Split::kTrain);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("data.dataset: expected \"fashion-mnist\", \"csv\" or \"text\", "
                                                             "got \"cifar10\""));
}

// ---- Crafted files, written as an attacker (or a broken export) would ----------------

// An IDX header: magic 0x00 0x00 0x08 num_dims, then each dimension big-endian.
std::string IdxHeader(std::vector<uint32_t> dims) {
  std::string out = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((d >> shift) & 0xff);
  }
  return out;
}

class CraftedIdxTest : public ::testing::Test {
 protected:
  // Writes the test split's image and label files (not gzip'd: zlib reads them as they
  // are, as it would any file an attacker left in place of the real ones).
  absl::StatusOr<Dataset> Read(const std::string& images, const std::string& labels) {
    WriteFile(dir_.path() / "t10k-images-idx3-ubyte.gz", images);
    WriteFile(dir_.path() / "t10k-labels-idx1-ubyte.gz", labels);
    return ReadFashionMnist(dir_.path().string(), Split::kTest);
  }
  std::string images_path() const { return (dir_.path() / "t10k-images-idx3-ubyte.gz").string(); }
  TempDir dir_;
};

TEST_F(CraftedIdxTest, ReadsASmallWellFormedPair) {
  std::string pixels;
  for (int i = 0; i < 3 * 4 * 5; ++i) pixels += static_cast<char>(i * 4);
  absl::StatusOr<Dataset> d = Read(IdxHeader({3, 4, 5}) + pixels, IdxHeader({3}) + std::string{0, 9, 4});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{1, 4, 5}));
  EXPECT_EQ(d->labels, (std::vector<int64_t>{0, 9, 4}));
  ASSERT_EQ(d->features.size(), 60u);
  EXPECT_FLOAT_EQ(d->features[59], 236.0f / 255.0f);
}

// The attack of issue 14: 65,536 images of 2^24 x 2^24 pixels. The product is 2^64, which
// wraps to 0 in 64 bits, so a 16-byte image file "matched" its header, and the client
// aborted when it built tensors of that shape.
TEST_F(CraftedIdxTest, DimensionsWhoseProductOverflowsAreRefusedNamingTheFile) {
  absl::StatusOr<Dataset> d =
      Read(IdxHeader({1u << 16, 1u << 24, 1u << 24}), IdxHeader({1u << 16}) + std::string(1u << 16, '\0'));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(images_path()));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("dimension"));
}

TEST_F(CraftedIdxTest, DimensionsPastTheFileAreRefusedBeforeAnyAllocation) {
  // 4 billion images of 4 billion x 4 billion pixels, in a file of 20 bytes: refused by the
  // file's size, not by a failed allocation.
  absl::StatusOr<Dataset> d = Read(IdxHeader({0xffffffffu, 0xffffffffu, 0xffffffffu}) + "abcd",
                                   IdxHeader({0xffffffffu}) + "x");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(images_path()));
}

TEST_F(CraftedIdxTest, AZeroDimensionIsRefused) {
  absl::StatusOr<Dataset> d = Read(IdxHeader({2, 0, 28}) + "ab", IdxHeader({2}) + std::string(2, '\1'));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("IDX dimension 1 is 0"));
}

TEST_F(CraftedIdxTest, TrailingBytesAndShortFilesAreRefused) {
  const std::string labels = IdxHeader({1}) + std::string(1, '\2');
  absl::StatusOr<Dataset> longer = Read(IdxHeader({1, 2, 2}) + "abcdE", labels);
  ASSERT_FALSE(longer.ok());
  EXPECT_THAT(std::string(longer.status().message()), HasSubstr("trailing bytes"));
  absl::StatusOr<Dataset> header_cut = Read(IdxHeader({1, 2, 2}).substr(0, 9), labels);
  ASSERT_FALSE(header_cut.ok());
  EXPECT_THAT(std::string(header_cut.status().message()), HasSubstr("not an IDX3 image file"));
}

TEST_F(CraftedIdxTest, ALabelOutOfRangeIsNamed) {
  absl::StatusOr<Dataset> d = Read(IdxHeader({2, 1, 1}) + "ab", IdxHeader({2}) + std::string{1, 10});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("label 1 is 10, expected 0 to 9"));
}

TEST_F(CsvTest, AnIntegerLabelPastTheClassBoundIsRefused) {
  // INT64_MAX as a label made num_classes overflow (max + 1); any huge label asked the
  // model for that many outputs.
  const std::string path = Write("huge.csv", "label,x\n9223372036854775807,1\n0,2\n");
  absl::StatusOr<Dataset> d = ReadCsv(path, "label");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("label 9223372036854775807"));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(path));
}

TEST_F(CsvTest, TooManyDistinctStringLabelsAreRefused) {
  std::string text = "label,x\n";
  for (int i = 0; i <= 65536; ++i) text += "c" + std::to_string(i) + ",1\n";
  absl::StatusOr<Dataset> d = ReadCsv(Write("classes.csv", text), "label");
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("65537 distinct labels"));
}

TEST_F(CsvTest, NonFiniteAndOutOfRangeFeaturesAreRefused) {
  for (const std::string value : {"nan", "inf", "-1e39", "1e400"}) {
    absl::StatusOr<Dataset> d = ReadCsv(Write("f.csv", "label,x\n0," + value + "\n"), "label");
    ASSERT_FALSE(d.ok()) << value;
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("column \"x\" is not a")) << value;
  }
}

TEST_F(CsvTest, AHugeFieldIsQuotedOnlyInPart) {
  const std::string path = Write("wide.csv", "label,x\n0," + std::string(100000, 'z') + "\n");
  absl::StatusOr<Dataset> d = ReadCsv(path, "label");
  ASSERT_FALSE(d.ok());
  EXPECT_LT(d.status().message().size(), 400u);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("(100000 bytes)"));
}

TEST_F(CsvTest, AFileWithoutFeaturesOrRowsIsRefused) {
  absl::StatusOr<Dataset> only_label = ReadCsv(Write("l.csv", "label\n0\n1\n"), "label");
  ASSERT_FALSE(only_label.ok());
  EXPECT_THAT(std::string(only_label.status().message()), HasSubstr("at least one feature column"));
  absl::StatusOr<Dataset> no_rows = ReadCsv(Write("n.csv", "label,x\n\n"), "label");
  ASSERT_FALSE(no_rows.ok());
  EXPECT_THAT(std::string(no_rows.status().message()), HasSubstr("no data rows"));
}

}  // namespace
}  // namespace cohort::training
