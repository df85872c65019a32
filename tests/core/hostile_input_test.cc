// The job config loader and the checkpoint reader fed what an attacker would write:
// documents nested 100,000 levels deep, 50 MB values, members of the wrong type. Each
// must be refused with a short error naming the file, never crash or allocate the
// world; documents nested deeply but within the limit still load.

#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/hostile_json.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/job_config.h"
#include "core/limits.h"
#include "storage/hmac.h"
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

// The server's key, and another server's.
CheckpointKey KeyOf(char fill) {
  CheckpointKey key;
  key.bytes.fill(std::byte(fill));
  return key;
}
const CheckpointKey kKey = KeyOf('k');

// A checkpoint file with a valid magic, version and lengths around `header`, `model` as its
// model bytes, authenticated under `key`: crafted by someone who holds the server's key (or
// not), to show that what follows the MAC check is checked too.
void WriteCheckpointFile(const fs::path& path, const std::string& header, const std::string& model,
                         const CheckpointKey& key = kKey) {
  std::string data = "COHORTCK";
  auto put_u32 = [&data](uint32_t v) {
    for (int i = 0; i < 4; ++i) data.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put_u32(2);
  put_u32(static_cast<uint32_t>(header.size()));
  data += header;
  data += model;
  const storage::HmacSha256Tag tag = storage::HmacSha256(key.bytes).Update(data).Finish();
  data.append(reinterpret_cast<const char*>(tag.data()), tag.size());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}
void WriteCheckpointFile(const fs::path& path, const std::string& header, size_t model_bytes = 0) {
  WriteCheckpointFile(path, header, std::string(model_bytes, '\0'));
}

// A header that passes every check but the member `manifest` is replaced by.
std::string WithManifest(const std::string& manifest) {
  return R"({"job":"j","round":1,"model_version":1,"summary":{},"manifest":)" + manifest + "}";
}

class HostileCheckpointTest : public ::testing::Test {
 protected:
  std::string RefusalOf(const std::string& header, size_t model_bytes = 0) {
    return RefusalOfFile([&](const fs::path& path) { WriteCheckpointFile(path, header, model_bytes); });
  }
  std::string RefusalOfFile(const std::function<void(const fs::path&)>& write) {
    const fs::path path = dir_.path() / "checkpoint.bin";
    write(path);
    absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
    if (read.ok()) {
      ADD_FAILURE() << "read, but should have been refused";
      return "";
    }
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    const std::string message(read.status().message());
    EXPECT_THAT(message, StartsWith("checkpoint " + path.string()));
    EXPECT_LT(message.size(), 400 + path.string().size()) << message;
    return message;
  }

  cohort::testing::TempDir dir_;
};

TEST_F(HostileCheckpointTest, AcceptsAWellFormedHeader) {
  const fs::path path = dir_.path() / "checkpoint.bin";
  WriteCheckpointFile(path,
                      R"({"job":"j","round":2,"model_version":2,"summary":{"rounds":[{"round":1},{"round":2}]},)"
                      R"("manifest":[{"name":"w","dtype":"float32","shape":[2,3]}]})",
                      24);
  absl::StatusOr<Checkpoint> read = ReadCheckpoint(path, kKey);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->job, "j");
  EXPECT_EQ(read->model.manifest().total_bytes(), 24u);
}

TEST_F(HostileCheckpointTest, RefusesACheckpointForgedWithoutTheServersKey) {
  const std::string header = WithManifest(R"([{"name":"w","dtype":"float32","shape":[2]}])");
  // Written by another server (or an attacker with a key of their own).
  EXPECT_THAT(RefusalOfFile([&](const fs::path& p) { WriteCheckpointFile(p, header, std::string(8, '\0'), KeyOf('x')); }),
              HasSubstr("does not carry this server's MAC"));
  // The server's own file with one model byte changed.
  EXPECT_THAT(RefusalOfFile([&](const fs::path& p) {
                WriteCheckpointFile(p, header, 8);
                std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
                f.seekp(16 + static_cast<std::streamoff>(header.size()) + 3);
                f.put('\x7f');
              }),
              HasSubstr("does not carry this server's MAC"));
  // A version-1 file with a CRC anyone can compute is no longer read.
  EXPECT_THAT(RefusalOfFile([&](const fs::path& p) {
                WriteCheckpointFile(p, header, 8);
                std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
                f.seekp(8);
                f.put('\x01');
              }),
              HasSubstr("format version 1, expected 2"));
}

TEST_F(HostileCheckpointTest, RefusesAHeaderNestedAHundredThousandLevels) {
  EXPECT_THAT(RefusalOf(R"({"job":"j","summary":)" + NestedObjects(100'000) + "}"),
              HasSubstr("header: expected JSON nested at most 64 levels deep"));
  EXPECT_THAT(RefusalOf(NestedArrays(100'000)), HasSubstr("nested at most 64 levels deep"));
}

TEST_F(HostileCheckpointTest, RefusesMembersOfTheWrongTypeInsteadOfThrowing) {
  EXPECT_THAT(RefusalOf(R"({"job":5,"round":1,"model_version":1,"summary":{},"manifest":[]})"),
              HasSubstr("job (a string)"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":-1,"model_version":1,"summary":{},"manifest":[]})"),
              HasSubstr("round and model_version"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":"1","model_version":1,"summary":{},"manifest":[]})"),
              HasSubstr("round and model_version"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":1,"model_version":1,"summary":[],"manifest":[]})"),
              HasSubstr("summary (an object)"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":1,"model_version":1,"summary":{}})"), HasSubstr("manifest (an array)"));
  EXPECT_THAT(RefusalOf(R"([1,2])"), HasSubstr("header: expected an object"));
  EXPECT_THAT(RefusalOf(WithManifest(R"([{"name":"w","dtype":7,"shape":[1]}])")),
              HasSubstr("manifest tensor 0: expected {\"name\": string"));
  EXPECT_THAT(RefusalOf(WithManifest(R"([{"name":"w","dtype":"float32","shape":["x"]}])")),
              HasSubstr("manifest tensor 0 (\"w\"): expected integer dimensions, got shape [\"x\"]"));
  EXPECT_THAT(RefusalOf(WithManifest(R"([{"name":"w","dtype":"float32","shape":[2,-1]}])")),
              HasSubstr("manifest tensor 0 (\"w\"): shape [2, -1]: expected dimensions >= 0"));
}

TEST_F(HostileCheckpointTest, RefusesRoundsAndVersionsThatDoNotAgree) {
  // An absurd round, with or without a matching version.
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":18446744073709551615,"model_version":3,"summary":{},"manifest":[]})"),
              HasSubstr("model_version 3 after round 18446744073709551615"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":2,"model_version":5,"summary":{},"manifest":[]})"),
              HasSubstr("exactly one version"));
  // A summary claiming rounds the checkpoint has not reached, or that are not objects.
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":1,"model_version":1,"summary":{"rounds":[{"round":1},{"round":2}]},)"
                        R"("manifest":[]})"),
              HasSubstr("summary.rounds: expected an array of at most 1 rounds"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":2,"model_version":2,"summary":{"rounds":[{"round":9}]},"manifest":[]})"),
              HasSubstr("expected objects with a round from 1 to 2"));
  EXPECT_THAT(RefusalOf(R"({"job":"j","round":2,"model_version":2,"summary":{"rounds":[7]},"manifest":[]})"),
              HasSubstr("expected objects with a round from 1 to 2"));
}

TEST_F(HostileCheckpointTest, RefusesAModelWithANanOrInfinity) {
  const std::string header = WithManifest(R"([{"name":"w","dtype":"float32","shape":[3]}])");
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    const float values[3] = {0.5f, bad, 1.0f};
    const std::string model(reinterpret_cast<const char*>(values), sizeof(values));
    EXPECT_THAT(RefusalOfFile([&](const fs::path& p) { WriteCheckpointFile(p, header, model); }),
                HasSubstr("tensor \"w\" holds a NaN or infinity at element 1"));
  }
}

TEST_F(HostileCheckpointTest, RefusesAManifestTooLargeToAllocateBeforeAllocating) {
  // 2^62 * 2^62 * 4 bytes overflows 64 bits; each tensor alone is over kMaxModelBytes.
  EXPECT_THAT(RefusalOf(WithManifest(R"([{"name":"w","dtype":"float32",)"
                                     R"("shape":[4611686018427387904,4611686018427387904]}])")),
              HasSubstr("totalling at most 68719476736 bytes"));
  // Tensors each under the limit whose sum is over it.
  EXPECT_THAT(RefusalOf(WithManifest(R"([{"name":"a","dtype":"float32","shape":[10000000000]},)"
                                     R"({"name":"b","dtype":"float32","shape":[10000000000]}])")),
              HasSubstr("expected a model of at most 68719476736 bytes, tensors 0 to 1 already hold 80000000000"));
  // Within the limit but not what the file holds: refused before a buffer is made.
  EXPECT_THAT(RefusalOf(WithManifest(R"([{"name":"a","dtype":"float32","shape":[4000000000]}])")),
              HasSubstr("model size does not match manifest"));
}

}  // namespace
}  // namespace cohort::core
