#include "core/parameter_set.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort::core {
namespace {

using ::testing::HasSubstr;

// The first layers of the NIID-Bench CNN plus a mixed-dtype tail, so offsets are not all
// multiples of one size.
Manifest ExampleManifest() {
  return Manifest({{"layers.1.weight", DType::kFloat32, {6, 1, 5, 5}},
                   {"layers.1.bias", DType::kFloat32, {6}},
                   {"step", DType::kInt64, {}},
                   {"scale", DType::kFloat64, {3}},
                   {"counts", DType::kInt32, {2, 2}}});
}

TEST(DTypeTest, SizesAndNamesRoundTripThroughParse) {
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kFloat64), 8u);
  EXPECT_EQ(DTypeSize(DType::kInt64), 8u);
  EXPECT_EQ(DTypeSize(DType::kInt32), 4u);
  for (DType d : {DType::kFloat32, DType::kFloat64, DType::kInt64, DType::kInt32}) {
    absl::StatusOr<DType> parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d);
  }
}

TEST(DTypeTest, ParseRefusesAnUnknownNameAndQuotesIt) {
  absl::StatusOr<DType> parsed = ParseDType("bfloat16");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("\"bfloat16\""));
}

TEST(TensorSpecTest, CountsElementsAndBytesAndPrintsItsShape) {
  const TensorSpec conv{"layers.1.weight", DType::kFloat32, {6, 1, 5, 5}};
  EXPECT_EQ(conv.num_elements(), 150u);
  EXPECT_EQ(conv.num_bytes(), 600u);
  EXPECT_EQ(conv.ShapeString(), "[6, 1, 5, 5]");
  const TensorSpec scalar{"step", DType::kInt64, {}};
  EXPECT_EQ(scalar.num_elements(), 1u) << "a scalar holds one value";
  EXPECT_EQ(scalar.num_bytes(), 8u);
  EXPECT_EQ(scalar.ShapeString(), "[]");
}

TEST(ManifestTest, OffsetsAreTheRunningSumOfTensorSizes) {
  const Manifest m = ExampleManifest();
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m.offset(0), 0u);
  EXPECT_EQ(m.offset(1), 600u);
  EXPECT_EQ(m.offset(2), 624u);
  EXPECT_EQ(m.offset(3), 632u);
  EXPECT_EQ(m.offset(4), 656u);
  EXPECT_EQ(m.total_bytes(), 672u);
  EXPECT_EQ(m.num_elements(), 150u + 6 + 1 + 3 + 4);
  EXPECT_FALSE(m.all_float32());
}

TEST(ManifestTest, CheckAllFloat32NamesTheFirstOtherTensorItsDtypeAndTheFix) {
  const Manifest m({{"layers.0.weight", DType::kFloat32, {4, 2}},
                    {"bn.num_batches_tracked", DType::kInt64, {1}},
                    {"scale", DType::kFloat64, {3}}});
  const absl::Status s = m.CheckAllFloat32("FedAvg");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "FedAvg needs every tensor of the model in float32, but tensor 1 (bn.num_batches_tracked) is int64 [1]: "
            "make it a float32 parameter in the model, or keep it out of the parameters the job trains");
  EXPECT_TRUE(Manifest({{"w", DType::kFloat32, {2}}}).CheckAllFloat32("FedAvg").ok());
}

TEST(ManifestTest, EmptyManifestHasNoBytes) {
  const Manifest m;
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(m.total_bytes(), 0u);
  EXPECT_TRUE(m.all_float32());
  EXPECT_TRUE(m.CheckSameAs(Manifest()).ok());
}

TEST(ManifestTest, CheckSameAsAcceptsAnIdenticalManifest) {
  EXPECT_TRUE(ExampleManifest().CheckSameAs(ExampleManifest()).ok());
  EXPECT_TRUE(ExampleManifest() == ExampleManifest());
}

TEST(ManifestTest, CheckSameAsNamesTheTensorWhoseNameDiffers) {
  std::vector<TensorSpec> t = ExampleManifest().tensors();
  t[1].name = "layers.2.bias";
  const absl::Status s = ExampleManifest().CheckSameAs(Manifest(t));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr("tensor 1"));
  EXPECT_THAT(msg, HasSubstr("wrong name"));
  EXPECT_THAT(msg, HasSubstr("expected layers.1.bias float32 [6]"));
  EXPECT_THAT(msg, HasSubstr("got layers.2.bias float32 [6]"));
}

TEST(ManifestTest, CheckSameAsNamesTheTensorWhoseDtypeDiffers) {
  std::vector<TensorSpec> t = ExampleManifest().tensors();
  t[3].dtype = DType::kFloat32;
  const absl::Status s = ExampleManifest().CheckSameAs(Manifest(t));
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr("tensor 3"));
  EXPECT_THAT(msg, HasSubstr("wrong dtype"));
  EXPECT_THAT(msg, HasSubstr("expected scale float64 [3]"));
  EXPECT_THAT(msg, HasSubstr("got scale float32 [3]"));
}

TEST(ManifestTest, CheckSameAsNamesTheTensorWhoseShapeDiffers) {
  std::vector<TensorSpec> t = ExampleManifest().tensors();
  t[0].shape = {6, 1, 3, 3};
  const absl::Status s = ExampleManifest().CheckSameAs(Manifest(t));
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr("tensor 0"));
  EXPECT_THAT(msg, HasSubstr("wrong shape"));
  EXPECT_THAT(msg, HasSubstr("expected layers.1.weight float32 [6, 1, 5, 5]"));
  EXPECT_THAT(msg, HasSubstr("got layers.1.weight float32 [6, 1, 3, 3]"));
}

TEST(ManifestTest, CheckSameAsGivesBothTensorCountsWhenTheyDiffer) {
  std::vector<TensorSpec> t = ExampleManifest().tensors();
  t.pop_back();
  const absl::Status s = ExampleManifest().CheckSameAs(Manifest(t));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected 5 tensors, got 4"));
}

TEST(ParameterSetTest, StartsZeroFilledWithTheManifestsSize) {
  const ParameterSet set(ExampleManifest());
  ASSERT_EQ(set.bytes().size(), 672u);
  for (std::byte b : set.bytes()) ASSERT_EQ(b, std::byte{0});
}

TEST(ParameterSetTest, TensorBytesAreTheManifestSlicesOfTheBuffer) {
  ParameterSet set(ExampleManifest());
  for (size_t i = 0; i < set.manifest().size(); ++i) {
    const std::span<std::byte> t = set.tensor_bytes(i);
    EXPECT_EQ(t.data(), set.bytes().data() + set.manifest().offset(i)) << "tensor " << i;
    EXPECT_EQ(t.size(), set.manifest().tensors()[i].num_bytes()) << "tensor " << i;
  }
  const int64_t step = 123456789012345;
  std::memcpy(set.tensor_bytes(2).data(), &step, sizeof(step));
  int64_t read_back = 0;
  std::memcpy(&read_back, set.bytes().data() + 624, sizeof(read_back));
  EXPECT_EQ(read_back, step);
}

TEST(ParameterSetTest, FloatsViewsTheWholeBufferOfAFloat32Set) {
  ParameterSet set(Manifest({{"a", DType::kFloat32, {2, 3}}, {"b", DType::kFloat32, {4}}}));
  std::span<float> f = set.floats();
  ASSERT_EQ(f.size(), 10u);
  f[6] = 2.5f;  // first element of "b"
  float b0 = 0;
  std::memcpy(&b0, set.tensor_bytes(1).data(), sizeof(float));
  EXPECT_EQ(b0, 2.5f);
}

TEST(ParameterSetTest, FindReturnsTheIndexOfANameOrMinusOne) {
  const ParameterSet set(ExampleManifest());
  EXPECT_EQ(set.Find("layers.1.weight"), 0);
  EXPECT_EQ(set.Find("scale"), 3);
  EXPECT_EQ(set.Find("counts"), 4);
  EXPECT_EQ(set.Find("layers.1"), -1);
  EXPECT_EQ(set.Find(""), -1);
}

template <typename T>
std::vector<std::byte> BytesOf(const std::vector<T>& values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

TEST(CheckFiniteTest, AcceptsFiniteFloatsIncludingExtremes) {
  const std::vector<float> f = {0.0f, -0.0f, 1.0f, std::numeric_limits<float>::max(),
                                std::numeric_limits<float>::lowest(), std::numeric_limits<float>::denorm_min()};
  EXPECT_TRUE(CheckFinite(DType::kFloat32, BytesOf(f)).ok());
  const std::vector<double> d = {1e308, -1e308, 5e-324};
  EXPECT_TRUE(CheckFinite(DType::kFloat64, BytesOf(d)).ok());
}

TEST(CheckFiniteTest, CountsNanAndInfInFloat32) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> f = {1.0f, nan, 2.0f, inf, -inf, 3.0f};
  const absl::Status s = CheckFinite(DType::kFloat32, BytesOf(f));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("3 values are NaN or Inf"));
}

TEST(CheckFiniteTest, CountsNanAndInfInFloat64) {
  const std::vector<double> d = {std::numeric_limits<double>::quiet_NaN(), 0.5,
                                 std::numeric_limits<double>::signaling_NaN()};
  const absl::Status s = CheckFinite(DType::kFloat64, BytesOf(d));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("2 values are NaN or Inf"));
}

TEST(CheckFiniteTest, IgnoresIntegerTensorsWhoseBitsWouldBeNanAsFloats) {
  // 0x7fc00000 is a float NaN pattern, but as an int32 it is just a number.
  const std::vector<int32_t> i = {0x7fc00000, 0x7f800000};
  EXPECT_TRUE(CheckFinite(DType::kInt32, BytesOf(i)).ok());
}

// The smaps fields of the mapping that holds `address`, or "" when none does.
std::string SmapsOf(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::string line, block;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (line.find('-') < line.find(' ') && (range >> std::hex >> begin >> dash >> end) && dash == '-') {
      if (inside) return block;
      inside = begin <= at && at < end;
      continue;
    }
    if (inside) block += line + "\n";
  }
  return inside ? block : "";
}

// The VmFlags line of a mapping's smaps fields, with a space before each flag.
std::string VmFlags(const std::string& fields) {
  const size_t at = fields.find("VmFlags:");
  return at == std::string::npos ? "" : fields.substr(at + 8, fields.find('\n', at) - at - 8);
}

TEST(ParameterSetTest, AModelSizedSetIsZeroedAndAsksForHugePagesASmallOneComesFromTheHeap) {
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode((std::istreambuf_iterator<char>(thp)), std::istreambuf_iterator<char>());
  if (mode.find("[never]") != std::string::npos || mode.empty()) {
    GTEST_SKIP() << "transparent huge pages are off on this kernel (" << mode << "): nothing to ask for";
  }
  ParameterSet large(Manifest({{"w", DType::kFloat32, {4 << 20}}}));  // 16 MiB
  for (float v : large.floats()) ASSERT_EQ(v, 0.0f);
  const std::string fields = SmapsOf(large.bytes().data());
  ASSERT_FALSE(fields.empty()) << "no mapping holds the buffer";
  EXPECT_THAT(fields, ::testing::ContainsRegex("THPeligible: +1")) << fields;
  EXPECT_THAT(VmFlags(fields), HasSubstr(" hg")) << "no MADV_HUGEPAGE flag on the mapping:\n" << fields;
  // A copy and a move keep the contents.
  large.floats()[123] = 4.5f;
  ParameterSet copy = large;
  ParameterSet moved = std::move(large);
  EXPECT_EQ(copy.floats()[123], 4.5f);
  EXPECT_EQ(moved.floats()[123], 4.5f);

  ParameterSet small(Manifest({{"b", DType::kFloat32, {16}}}));
  EXPECT_THAT(VmFlags(SmapsOf(small.bytes().data())), ::testing::Not(HasSubstr(" hg")));
}

}  // namespace
}  // namespace cohort::core
