// One party's rows of a vertical job (training/vertical_data.h): CSV tables written to a
// temp dir, the real Fashion-MNIST cut into column ranges, and the seeded row orders every
// party must compute alike.
#include "training/vertical_data.h"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/temp_dir.h"
#include "training/data_readers.h"

namespace cohort::training {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using cohort::testing::TempDir;
using json = nlohmann::json;

const std::string kFashionMnistDir = COHORT_FASHION_MNIST_DIR;

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = (dir.path() / name).string();
  std::ofstream(path) << text;
  return path;
}

VerticalDataSpec CsvSpec(const std::string& path, const std::string& label_column = "") {
  VerticalDataSpec spec;
  spec.dataset = "csv";
  spec.path = path;
  spec.label_column = label_column;
  return spec;
}

constexpr char kBank[] =
    "id,income,diagnosis,age,debt\n"
    "p-3,10.5,1,40,2\n"
    "p-1,20,0,31,0.5\n"
    "\n"
    "p-7,5,1,52,7\n";

TEST(VerticalDataTest, CsvReadsIdentifiersFeaturesAndLabels) {
  TempDir dir;
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(WriteFile(dir, "bank.csv", kBank), "diagnosis"));
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT(table->identifiers, ElementsAre("p-3", "p-1", "p-7"));
  EXPECT_THAT(table->feature_shape, ElementsAre(3));
  EXPECT_THAT(table->features, ElementsAre(10.5f, 40, 2, 20, 31, 0.5f, 5, 52, 7));
  EXPECT_THAT(table->labels, ElementsAre(1, 0, 1));
  EXPECT_EQ(table->num_classes, 2);
}

TEST(VerticalDataTest, FeatureColumnsPickASubsetInTheListedOrder) {
  TempDir dir;
  VerticalDataSpec spec = CsvSpec(WriteFile(dir, "bank.csv", kBank));
  spec.feature_columns = {"debt", "income"};
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(spec);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT(table->feature_shape, ElementsAre(2));
  EXPECT_THAT(table->features, ElementsAre(2, 10.5f, 0.5f, 20, 7, 5));
  EXPECT_FALSE(table->has_labels());
  EXPECT_EQ(table->num_classes, 0);
}

TEST(VerticalDataTest, WithoutALabelColumnEveryOtherColumnIsAFeature) {
  TempDir dir;
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(WriteFile(dir, "clinic.csv", "id,a,b\nx,1,2\ny,3,4\n")));
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_FALSE(table->has_labels());
  EXPECT_THAT(table->features, ElementsAre(1, 2, 3, 4));
}

TEST(VerticalDataTest, DuplicateIdentifierNamesTheFileAndBothLines) {
  TempDir dir;
  const std::string path = WriteFile(dir, "dup.csv", "id,a\nx,1\ny,2\nx,3\n");
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(path));
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(table.status().message(), HasSubstr(path));
  EXPECT_THAT(table.status().message(), HasSubstr("\"x\" appears on lines 2 and 4"));
}

TEST(VerticalDataTest, MissingIdentifierColumnNamesTheKeyToSet) {
  TempDir dir;
  const std::string path = WriteFile(dir, "noid.csv", "name,a\nx,1\n");
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(path));
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.status().message(), HasSubstr(path));
  EXPECT_THAT(table.status().message(), HasSubstr("no column named \"id\" (set data.id_column"));
}

TEST(VerticalDataTest, NonNumericFeatureNamesFileLineAndColumn) {
  TempDir dir;
  const std::string path = WriteFile(dir, "bad.csv", "id,a,b\nx,1,2\ny,3,abc\n");
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(path));
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(table.status().message(), HasSubstr(path + ":3: column \"b\" is not a finite number: \"abc\""));
}

TEST(VerticalDataTest, LabelThatIsNotAnIntegerNamesTheLine) {
  TempDir dir;
  const std::string path = WriteFile(dir, "label.csv", "id,a,y\nx,1,0\nz,2,benign\n");
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(path, "y"));
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.status().message(), HasSubstr(path + ":3: label column \"y\""));
}

TEST(VerticalDataTest, WrongFieldCountNamesTheLine) {
  TempDir dir;
  const std::string path = WriteFile(dir, "short.csv", "id,a,b\nx,1,2\ny,3\n");
  absl::StatusOr<VerticalTable> table = ReadVerticalTable(CsvSpec(path));
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.status().message(), HasSubstr(path + ":3: expected 3 fields"));
}

TEST(VerticalDataTest, SpecParsesEveryKeyAndRoundTrips) {
  const json config = {{"dataset", "fashion-mnist"}, {"path", "/data/fm"}, {"label_column", "label"},
                       {"column_begin", 14},         {"column_end", 28},     {"split", "all"},
                       {"keep_fraction", 0.9},       {"keep_seed", 7u},       {"max_rows", 100}};
  absl::StatusOr<VerticalDataSpec> spec = ParseVerticalDataSpec(config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->column_begin, 14);
  EXPECT_EQ(spec->split, "all");
  EXPECT_EQ(spec->keep_seed, 7u);
  absl::StatusOr<VerticalDataSpec> again = ParseVerticalDataSpec(VerticalDataSpecToJson(*spec));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(VerticalDataSpecToJson(*again), VerticalDataSpecToJson(*spec));

  absl::StatusOr<VerticalDataSpec> csv =
      ParseVerticalDataSpec({{"path", "bank.csv"}, {"feature_columns", {"mean radius", "mean texture"}}});
  ASSERT_TRUE(csv.ok()) << csv.status();
  EXPECT_THAT(csv->feature_columns, ElementsAre("mean radius", "mean texture"));
}

TEST(VerticalDataTest, SpecErrorsNameTheKey) {
  auto error = [](const json& config) {
    absl::StatusOr<VerticalDataSpec> spec = ParseVerticalDataSpec(config);
    return spec.ok() ? std::string("ok") : std::string(spec.status().message());
  };
  EXPECT_THAT(error({{"path", "x"}, {"keep_fraction", 0}}), HasSubstr("data.keep_fraction"));
  EXPECT_THAT(error({{"path", "x"}, {"dataset", "parquet"}}), HasSubstr("data.dataset"));
  EXPECT_THAT(error({{"path", "x"}, {"feature_columns", "a"}}), HasSubstr("data.feature_columns"));
  EXPECT_THAT(error({{"path", "x"}, {"feature_columns", {"a", "a"}}}), HasSubstr("data.feature_columns[1]"));
  EXPECT_THAT(error({{"path", "x"}, {"colour", "red"}}), HasSubstr("colour"));
  EXPECT_THAT(error({{"dataset", "csv"}}), HasSubstr("data.path"));
  EXPECT_THAT(error({{"path", "x"}, {"column_begin", 20}, {"column_end", 10}}), HasSubstr("data.column_begin"));
  EXPECT_THAT(error(json::array()), HasSubstr("data: expected an object"));
}

TEST(VerticalDataTest, FashionMnistColumnRangesConcatenateToTheImage) {
  VerticalDataSpec left;
  left.dataset = "fashion-mnist";
  left.path = kFashionMnistDir;
  left.split = "test";
  left.column_begin = 0;
  left.column_end = 14;
  left.label_column = "label";
  left.max_rows = 5;
  VerticalDataSpec right = left;
  right.column_begin = 14;
  right.column_end = 28;
  right.label_column = "";
  absl::StatusOr<VerticalTable> l = ReadVerticalTable(left), r = ReadVerticalTable(right);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<Dataset> full = ReadFashionMnist(kFashionMnistDir, Split::kTest);
  ASSERT_TRUE(full.ok()) << full.status();

  EXPECT_THAT(l->feature_shape, ElementsAre(1, 28, 14));
  EXPECT_THAT(r->feature_shape, ElementsAre(1, 28, 14));
  ASSERT_EQ(l->rows(), 5u);
  EXPECT_EQ(l->identifiers, r->identifiers);
  EXPECT_EQ(l->identifiers[3], "fmnist-test-3");
  EXPECT_TRUE(l->has_labels());
  EXPECT_FALSE(r->has_labels());
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(l->labels[i], full->labels[i]);
    for (size_t y = 0; y < 28; ++y) {
      for (size_t x = 0; x < 28; ++x) {
        const float half = x < 14 ? l->features[i * 392 + y * 14 + x] : r->features[i * 392 + y * 14 + (x - 14)];
        ASSERT_EQ(half, full->features[i * 784 + y * 28 + x]) << "row " << i << " pixel " << y << "," << x;
      }
    }
  }
}

TEST(VerticalDataTest, KeepFractionIsSeededStableAndKeepsFileOrder) {
  TempDir dir;
  std::string text = "id,a\n";
  for (int i = 0; i < 200; ++i) text += "r" + std::to_string(i) + "," + std::to_string(i) + "\n";
  VerticalDataSpec spec = CsvSpec(WriteFile(dir, "rows.csv", text));
  spec.keep_fraction = 0.9;
  spec.keep_seed = 1;
  absl::StatusOr<VerticalTable> a = ReadVerticalTable(spec), b = ReadVerticalTable(spec);
  spec.keep_seed = 2;
  absl::StatusOr<VerticalTable> c = ReadVerticalTable(spec);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->rows(), 180u);
  EXPECT_EQ(a->identifiers, b->identifiers);
  EXPECT_NE(a->identifiers, c->identifiers);
  EXPECT_TRUE(std::is_sorted(a->features.begin(), a->features.end()));
  // Two parties keeping 90% each share most rows but not all.
  std::vector<std::string> x = a->identifiers, y = c->identifiers, both;
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(both));
  EXPECT_GT(both.size(), 140u);
  EXPECT_LT(both.size(), 180u);

  spec.max_rows = 10;
  absl::StatusOr<VerticalTable> head = ReadVerticalTable(spec);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->rows(), 10u);
  EXPECT_EQ(head->identifiers[9], c->identifiers[9]);
}

TEST(VerticalDataTest, EpochOrderIsAPermutationFixedBySeedAndEpoch) {
  const std::vector<size_t> a = EpochOrder(1000, 42, 0);
  std::vector<size_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<size_t> identity(1000);
  std::iota(identity.begin(), identity.end(), size_t{0});
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(a, identity);
  EXPECT_EQ(a, EpochOrder(1000, 42, 0));
  EXPECT_NE(a, EpochOrder(1000, 42, 1));
  EXPECT_NE(a, EpochOrder(1000, 43, 0));
  EXPECT_TRUE(EpochOrder(0, 1, 1).empty());
  EXPECT_THAT(EpochOrder(1, 1, 1), ElementsAre(0));
}

TEST(VerticalDataTest, SplitAlignedRowsPartitionsTheRows) {
  const AlignedSplit split = SplitAlignedRows(569, 0.2, 5);
  EXPECT_EQ(split.eval.size(), 114u);  // round(569 * 0.2)
  EXPECT_EQ(split.train.size(), 455u);
  EXPECT_TRUE(std::is_sorted(split.train.begin(), split.train.end()));
  EXPECT_TRUE(std::is_sorted(split.eval.begin(), split.eval.end()));
  std::set<size_t> all(split.train.begin(), split.train.end());
  all.insert(split.eval.begin(), split.eval.end());
  EXPECT_EQ(all.size(), 569u);
  EXPECT_EQ(*all.rbegin(), 568u);
  EXPECT_EQ(SplitAlignedRows(569, 0.2, 5).eval, split.eval);
  EXPECT_NE(SplitAlignedRows(569, 0.2, 6).eval, split.eval);
  EXPECT_TRUE(SplitAlignedRows(10, 0.0, 5).eval.empty());
}

TEST(VerticalDataTest, IntersectByIdentifierAlignsTablesOnTheirCommonRows) {
  TempDir dir;
  absl::StatusOr<VerticalTable> bank = ReadVerticalTable(CsvSpec(WriteFile(dir, "bank.csv", kBank), "diagnosis"));
  absl::StatusOr<VerticalTable> clinic =
      ReadVerticalTable(CsvSpec(WriteFile(dir, "clinic.csv", "id,bp\np-7,120\np-9,130\np-3,110\n")));
  ASSERT_TRUE(bank.ok() && clinic.ok());
  const std::vector<VerticalTable> aligned = IntersectByIdentifier({*bank, *clinic});
  ASSERT_EQ(aligned.size(), 2u);
  EXPECT_THAT(aligned[0].identifiers, ElementsAre("p-3", "p-7"));
  EXPECT_EQ(aligned[1].identifiers, aligned[0].identifiers);
  EXPECT_THAT(aligned[0].labels, ElementsAre(1, 1));
  EXPECT_THAT(aligned[1].features, ElementsAre(110, 120));
  EXPECT_THAT(aligned[0].features, ElementsAre(10.5f, 40, 2, 5, 52, 7));
}

}  // namespace
}  // namespace cohort::training
