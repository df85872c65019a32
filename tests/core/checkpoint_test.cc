#include "core/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "storage/atomic_write.h"
#include "tests/temp_dir.h"

namespace cohort::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using cohort::testing::TempDir;

// Plain overwrite without fsync: the corruption loops below write hundreds of variants.
void Overwrite(const fs::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> EntriesOf(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

CheckpointKey KeyOf(char fill) {
  CheckpointKey key;
  key.bytes.fill(std::byte(fill));
  return key;
}
const CheckpointKey kKey = KeyOf('k');

Checkpoint ExampleCheckpoint() {
  Checkpoint c;
  c.job = "fmnist-cnn";
  c.round = 17;
  c.model_version = 17;
  c.summary = {{"eval_accuracy", 0.8812}, {"clients", {"site-1", "site-2"}}, {"loss", 0.33}};
  c.model = ParameterSet(Manifest({{"layers.1.weight", DType::kFloat32, {6, 1, 2, 2}},
                                   {"layers.1.bias", DType::kFloat32, {6}},
                                   {"num_batches_tracked", DType::kInt64, {}}}));
  // Finite weights (a NaN or infinity is refused), every byte position distinct.
  std::span<std::byte> b = c.model.bytes();
  for (size_t i = 0; i + 4 <= 30 * 4; i += 4) {
    const float v = 0.37f * static_cast<float>(i) - 11.0f;
    std::memcpy(&b[i], &v, 4);
  }
  for (size_t i = 30 * 4; i < b.size(); ++i) b[i] = std::byte((i * 37 + 11) & 0xff);
  return c;
}

TEST(CheckpointTest, RoundTripsJobRoundVersionSummaryAndModel) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  const Checkpoint written = ExampleCheckpoint();
  ASSERT_TRUE(WriteCheckpoint(path, written, kKey).ok());
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->job, "fmnist-cnn");
  EXPECT_EQ(read->round, 17u);
  EXPECT_EQ(read->model_version, 17u);
  EXPECT_EQ(read->summary, written.summary);
  EXPECT_EQ(read->model.manifest(), written.model.manifest());
  ASSERT_EQ(read->model.bytes().size(), written.model.bytes().size());
  EXPECT_EQ(std::memcmp(read->model.bytes().data(), written.model.bytes().data(), written.model.bytes().size()), 0);
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"checkpoint.bin"}) << "a temporary file was left behind";
}

TEST(CheckpointTest, FileStartsWithTheDocumentedMagicAndVersion) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteCheckpoint(path, ExampleCheckpoint(), kKey).ok());
  absl::StatusOr<std::string> bytes = storage::ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  ASSERT_GT(bytes->size(), 16u);
  EXPECT_EQ(bytes->substr(0, 8), "COHORTCK");
  EXPECT_EQ(bytes->substr(8, 4), std::string("\x02\x00\x00\x00", 4));
  // Header length, then header, then the model, then a 32-byte HMAC-SHA256.
  uint32_t header_len = 0;
  for (int i = 0; i < 4; ++i) header_len |= uint32_t{static_cast<uint8_t>((*bytes)[12 + i])} << (8 * i);
  EXPECT_EQ(bytes->size(), 16 + header_len + ExampleCheckpoint().model.bytes().size() + 32);
  EXPECT_EQ((*bytes)[16], '{') << "the header is JSON";
}

// The header's bytes: the JSON of {"job","round","model_version","manifest","summary"}.
std::string HeaderOf(const std::string& file) {
  uint32_t header_len = 0;
  for (int i = 0; i < 4; ++i) header_len |= uint32_t{static_cast<uint8_t>(file[12 + i])} << (8 * i);
  return file.substr(16, header_len);
}

// A summary like the server's: one entry per round with every site's metrics; 600 rounds
// make its text longer than the writer's 64 KiB buffer.
nlohmann::json SummaryOfRounds(int rounds) {
  nlohmann::json summary = {{"job", "fmnist-cnn"}, {"status", "running"}, {"rounds", nlohmann::json::array()}};
  for (int r = 1; r <= rounds; ++r) {
    summary["rounds"].push_back({{"round", r},
                                 {"train_loss", 1.0 / r},
                                 {"clients", {{{"site", "site-1"}, {"samples", 270}, {"eval_accuracy", 0.8 + r * 1e-4}},
                                              {{"site", "site-2"}, {"samples", 270}, {"eval_accuracy", 0.7}}}}});
  }
  return summary;
}

TEST(CheckpointTest, HeaderIsTheJsonOfJobRoundVersionManifestAndSummary) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  const Checkpoint c = ExampleCheckpoint();
  ASSERT_TRUE(WriteCheckpoint(path, c, kKey).ok());
  const nlohmann::json header = {{"job", c.job},
                                 {"round", c.round},
                                 {"model_version", c.model_version},
                                 {"manifest", ManifestToJson(c.model.manifest())},
                                 {"summary", c.summary}};
  EXPECT_EQ(HeaderOf(*storage::ReadFile(path)), header.dump());
}

TEST(CheckpointTest, SummaryTextInPartsWritesTheBytesOfTheSummaryTree) {
  TempDir dir;
  Checkpoint c = ExampleCheckpoint();
  c.summary = SummaryOfRounds(600);
  c.round = c.model_version = 600;  // a checkpoint holds its rounds 1..round
  ASSERT_TRUE(WriteCheckpoint(dir.path() / "from-tree", c, kKey).ok());
  const std::string text = c.summary.dump();
  ASSERT_GT(text.size(), size_t{80000});
  // Parts of every size: one byte, a few hundred (a round's), and one over 64 KiB.
  std::vector<std::string_view> parts;
  const std::string_view all(text);
  size_t at = 0;
  for (size_t size : {size_t{1}, size_t{1}, size_t{300}, size_t{66000}, size_t{5}}) {
    parts.push_back(all.substr(at, size));
    at += size;
  }
  for (; at < all.size(); at += 317) parts.push_back(all.substr(at, 317));
  ASSERT_TRUE(
      WriteCheckpointWithSummaryText(dir.path() / "from-parts", c.job, c.round, c.model_version, parts, c.model, kKey)
          .ok());
  EXPECT_EQ(*storage::ReadFile(dir.path() / "from-parts"), *storage::ReadFile(dir.path() / "from-tree"));
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(dir.path() / "from-parts", kKey);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->summary, c.summary);
}

TEST(CheckpointTest, SummaryTextThatIsNotAnObjectIsRefused) {
  TempDir dir;
  const Checkpoint c = ExampleCheckpoint();
  for (std::vector<std::string_view> parts : std::vector<std::vector<std::string_view>>{
           {}, {"[1, 2]"}, {"{\"job\": 1"}, {"{\"job\"", ": 1,", ""}}) {
    absl::Status s =
        WriteCheckpointWithSummaryText(dir.path() / "c", c.job, c.round, c.model_version, parts, c.model, kKey);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << parts.size() << " parts";
    EXPECT_THAT(std::string(s.message()), HasSubstr("JSON object's text"));
  }
  EXPECT_FALSE(fs::exists(dir.path() / "c"));
}

TEST(CheckpointTest, AnEmptyModelRoundTrips) {
  TempDir dir;
  Checkpoint c;
  c.job = "empty";
  ASSERT_TRUE(WriteCheckpoint(dir.path() / "c", c, kKey).ok());
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(dir.path() / "c", kKey);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->job, "empty");
  EXPECT_EQ(read->model.manifest().size(), 0u);
}

TEST(CheckpointTest, AFlippedByteAnywhereIsDataLossNamingTheFile) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteCheckpoint(path, ExampleCheckpoint(), kKey).ok());
  const std::string original = *storage::ReadFile(path);
  // Every byte: magic, version, header length, header, model and the MAC trailer.
  for (size_t i = 0; i < original.size(); ++i) {
    std::string corrupt = original;
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x01);
    Overwrite(path, corrupt);
    absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
    ASSERT_FALSE(read.ok()) << "flipping byte " << i << " of " << original.size() << " went unnoticed";
    ASSERT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << "byte " << i << ": " << read.status();
    ASSERT_THAT(std::string(read.status().message()), HasSubstr(path.string())) << "byte " << i;
  }
}

TEST(CheckpointTest, EachRegionsCorruptionIsExplained) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteCheckpoint(path, ExampleCheckpoint(), kKey).ok());
  const std::string original = *storage::ReadFile(path);
  auto message_after_flip = [&](size_t i) {
    std::string corrupt = original;
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x80);
    Overwrite(path, corrupt);
    return std::string(ReadCheckpoint(path, kKey).status().message());
  };
  EXPECT_THAT(message_after_flip(0), HasSubstr("bad magic"));
  EXPECT_THAT(message_after_flip(8), HasSubstr("format version 130, expected 2"));
  // Everything after the version is under the MAC, checked before any of it is parsed.
  for (size_t i : {size_t{15}, size_t{20}, original.size() - 40, original.size() - 1}) {
    EXPECT_THAT(message_after_flip(i), HasSubstr("does not carry this server's MAC")) << "byte " << i;
  }
}

TEST(CheckpointTest, ACheckpointWrittenUnderAnotherKeyIsRefused) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteCheckpoint(path, ExampleCheckpoint(), KeyOf('x')).ok());
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("does not carry this server's MAC"));
  EXPECT_TRUE(ReadCheckpoint(path, KeyOf('x')).ok());
}

TEST(CheckpointTest, ATruncatedFileIsDataLossAtEveryLength) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteCheckpoint(path, ExampleCheckpoint(), kKey).ok());
  const std::string original = *storage::ReadFile(path);
  for (size_t length = 0; length < original.size(); ++length) {
    Overwrite(path, std::string_view(original).substr(0, length));
    absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
    ASSERT_FALSE(read.ok()) << "truncated to " << length << " bytes";
    ASSERT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << length << ": " << read.status();
  }
}

TEST(CheckpointTest, AMissingFileIsNotFoundRatherThanDataLoss) {
  TempDir dir;
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(dir.path() / "absent.bin", kKey);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("absent.bin"));
}

TEST(CheckpointTest, WritingAgainReplacesTheCheckpoint) {
  TempDir dir;
  const fs::path path = dir.path() / "checkpoint.bin";
  ASSERT_TRUE(WriteCheckpoint(path, ExampleCheckpoint(), kKey).ok());
  Checkpoint next = ExampleCheckpoint();
  next.round = 18;
  next.model_version = 18;
  next.model.bytes()[0] = std::byte{0xAB};
  ASSERT_TRUE(WriteCheckpoint(path, next, kKey).ok());
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->round, 18u);
  EXPECT_EQ(read->model.bytes()[0], std::byte{0xAB});
  EXPECT_EQ(EntriesOf(dir.path()), std::vector<std::string>{"checkpoint.bin"});
}

TEST(ManifestJsonTest, RoundTripsAndRefusesMalformedEntries) {
  const Manifest m = ExampleCheckpoint().model.manifest();
  absl::StatusOr<Manifest> back = ManifestFromJson(ManifestToJson(m));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, m);
  EXPECT_FALSE(ManifestFromJson(nlohmann::json::object()).ok());
  EXPECT_FALSE(ManifestFromJson(nlohmann::json::parse(R"([{"name": "w", "shape": [1]}])")).ok());
  absl::StatusOr<Manifest> bad_dtype =
      ManifestFromJson(nlohmann::json::parse(R"([{"name": "w", "dtype": "float16", "shape": [1]}])"));
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_THAT(std::string(bad_dtype.status().message()), HasSubstr("float16"));
}

}  // namespace
}  // namespace cohort::core
