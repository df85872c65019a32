// The job config loader and the checkpoint reader fed what an attacker would write:
// documents nested 100,000 levels deep, 50 MB values, members of the wrong type. Each
// must be refused with a short error naming the file, never crash or allocate the
// world; documents nested deeply but within the limit still load.

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/hostile_json.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/job_config.h"
#include "core/limits.h"
#include "tests/temp_dir.h"

namespace cohort::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using ::cohort::testing::NestedArrays;
using ::cohort::testing::NestedObjects;

// A job config whose model_config holds `model_value` (core does not read the model).
std::string JobConfigWith(const std::string& model_value) {
  return "{\"job\": {\"name\": \"hostile\"}, \"model_config\": {\"spec\": " + model_value + "}}";
}

class HostileJobConfigTest : public ::testing::Test {
 protected:
  // Writes `text` as a job config, loads it and returns the refusal's message.
  std::string RefusalOf(const std::string& text) {
    const fs::path path = dir_.path() / "job.json";
    std::ofstream(path, std::ios::trunc) << text;
    absl::StatusOr<JobConfig> loaded = LoadJobConfig(path.string());
    if (loaded.ok()) {
      ADD_FAILURE() << "loaded, but should have been refused";
      return "";
    }
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(loaded.status().message());
    EXPECT_THAT(message, HasSubstr(path.string() + ": "));
    EXPECT_LT(message.size(), 300 + path.string().size()) << message;
    return message;
  }

  cohort::testing::TempDir dir_;
};

TEST_F(HostileJobConfigTest, RefusesAHundredThousandNestedArrays) {
  EXPECT_THAT(RefusalOf(JobConfigWith(NestedArrays(100'000))), HasSubstr("nested at most 64 levels deep"));
}

TEST_F(HostileJobConfigTest, RefusesAHundredThousandNestedObjects) {
  EXPECT_THAT(RefusalOf(NestedObjects(100'000)), HasSubstr("nested at most 64 levels deep"));
}

TEST_F(HostileJobConfigTest, RefusesAFiftyMegabyteStringByItsSize) {
  const std::string huge = JobConfigWith("\"" + std::string(50'000'000, 'x') + "\"");
  EXPECT_THAT(RefusalOf(huge), HasSubstr(absl::StrCat("expected at most 1048576 bytes, got ", huge.size())));
}

TEST_F(HostileJobConfigTest, QuotesOnlyAShortPrefixOfAWrongValue) {
  const std::string message = RefusalOf("{\"job\": {\"name\": \"hostile\", \"seed\": \"" + std::string(500'000, 'x') +
                                        "\"}, \"model_config\": {}}");
  EXPECT_THAT(message, HasSubstr("job.seed: expected"));
  EXPECT_THAT(message, HasSubstr("... (500002 bytes)"));
}

TEST_F(HostileJobConfigTest, LoadsAModelConfigNestedDeeplyWithinTheLimit) {
  const fs::path path = dir_.path() / "deep-but-fine.json";
  std::ofstream(path) << JobConfigWith(NestedObjects(kMaxJsonDepth - 3));
  absl::StatusOr<JobConfig> loaded = LoadJobConfig(path.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->name, "hostile");
  EXPECT_TRUE(loaded->model_config["spec"].contains("a"));
}

// A checkpoint file with a valid magic, version, lengths and CRC around `header`, and
// `model_bytes` zero bytes of model: what ReadCheckpoint trusts least is the JSON.
void WriteCheckpointFile(const fs::path& path, const std::string& header, size_t model_bytes = 0) {
  std::string data = "COHORTCK";
  auto put_u32 = [&data](uint32_t v) {
    for (int i = 0; i < 4; ++i) data.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put_u32(1);
  put_u32(static_cast<uint32_t>(header.size()));
  data += header;
  data.append(model_bytes, '\0');
  put_u32(static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()))));
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

class HostileCheckpointTest : public ::testing::Test {
 protected:
  std::string RefusalOf(const std::string& header, size_t model_bytes = 0) {
    const fs::path path = dir_.path() / "checkpoint.bin";
    WriteCheckpointFile(path, header, model_bytes);
    absl::StatusOr<Checkpoint> read = ReadCheckpoint(path);
    if (read.ok()) {
      ADD_FAILURE() << "read, but should have been refused";
      return "";
    }
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    const std::string message(read.status().message());
    EXPECT_THAT(message, StartsWith("checkpoint " + path.string() + " is corrupt: "));
    EXPECT_LT(message.size(), 400 + path.string().size()) << message;
    return message;
  }

  cohort::testing::TempDir dir_;
};

TEST_F(HostileCheckpointTest, AcceptsAWellFormedHeader) {
  const fs::path path = dir_.path() / "checkpoint.bin";
  WriteCheckpointFile(path,
                      R"({"job":"j","round":2,"model_version":2,"summary":{"rounds":[]},)"
                      R"("manifest":[{"name":"w","dtype":"float32","shape":[2,3]}]})",
                      24);
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->job, "j");
  EXPECT_EQ(read->model.manifest().total_bytes(), 24u);
}

TEST_F(HostileCheckpointTest, RefusesAHeaderNestedAHundredThousandLevels) {
  EXPECT_THAT(RefusalOf(R"({"job":"j","summary":)" + NestedObjects(100'000) + "}"),
              HasSubstr("header: expected JSON nested at most 64 levels deep"));
  EXPECT_THAT(RefusalOf(NestedArrays(100'000)), HasSubstr("nested at most 64 levels deep"));
}

TEST_F(HostileCheckpointTest, RefusesMembersOfTheWrongTypeInsteadOfThrowing) {
  EXPECT_THAT(RefusalOf(R"({"job":5,"manifest":[]})"), HasSubstr("job (a string)"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":-1,"manifest":[]})"), HasSubstr("round and model_version"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","summary":[],"manifest":[]})"), HasSubstr("summary (an object)"));
  EXPECT_THAT(RefusalOf(R"([1,2])"), HasSubstr("header: expected an object"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","manifest":[{"name":"w","dtype":7,"shape":[1]}]})"),
              HasSubstr("manifest tensor 0: expected {\"name\": string"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","manifest":[{"name":"w","dtype":"float32","shape":["x"]}]})"),
              HasSubstr("manifest tensor 0 (\"w\"): expected integer dimensions, got shape [\"x\"]"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","manifest":[{"name":"w","dtype":"float32","shape":[2,-1]}]})"),
              HasSubstr("manifest tensor 0 (\"w\"): shape [2, -1]: expected dimensions >= 0"));
}

TEST_F(HostileCheckpointTest, RefusesAManifestTooLargeToAllocateBeforeAllocating) {
  // 2^62 * 2^62 * 4 bytes overflows 64 bits; each tensor alone is over kMaxModelBytes.
  EXPECT_THAT(RefusalOf(R"({"job":"j","manifest":[{"name":"w","dtype":"float32",)"
                        R"("shape":[4611686018427387904,4611686018427387904]}]})"),
              HasSubstr("totalling at most 68719476736 bytes"));
  // Tensors each under the limit whose sum is over it.
  EXPECT_THAT(RefusalOf(R"({"job":"j","manifest":[{"name":"a","dtype":"float32","shape":[10000000000]},)"
                        R"({"name":"b","dtype":"float32","shape":[10000000000]}]})"),
              HasSubstr("expected a model of at most 68719476736 bytes, tensors 0 to 1 already hold 80000000000"));
  // Within the limit but not what the file holds: refused before a buffer is made.
  EXPECT_THAT(RefusalOf(R"({"job":"j","manifest":[{"name":"a","dtype":"float32","shape":[4000000000]}]})"),
              HasSubstr("model size does not match manifest"));
}

}  // namespace
}  // namespace cohort::core
