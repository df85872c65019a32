// The TensorBoard event file: CRC-32C against its published check value, the TFRecord
// framing byte by byte, and a written file read back by an independent reader
// (tests/server/read_tfevents.py: its own CRC, protoc's Python code for TensorFlow's
// field numbers) with every scalar of the round entries it was given.
#include "server/tensorboard_writer.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <sys/wait.h>

#include "tests/temp_dir.h"

namespace cohort::server {
namespace {

struct Result {
  int exit_code;
  std::string output;
};

Result Run(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The reader's verdict on `file`; skips the test when python3-protobuf or protoc is missing.
Result ReadEvents(const std::filesystem::path& file) {
  return Run("/usr/bin/python3 " COHORT_SOURCE_DIR "/tests/server/read_tfevents.py " + file.string() +
             " " COHORT_SOURCE_DIR "/tests/server/tensorboard_event.proto 2>&1");
}

nlohmann::json RoundEntry(int round, double test_accuracy) {
  return {{"round", round},
          {"test_loss", 1.5 / round},
          {"test_accuracy", test_accuracy},
          {"train_loss", 2.0 / round},
          {"client_eval_accuracy", test_accuracy - 0.01},
          {"wall_seconds", 3.25},
          {"phase_seconds", {{"training", 2.5}, {"fold", 0.125}}},
          {"clients",
           {{{"site", "site-0"}, {"eval_accuracy", 0.5}, {"eval_loss", 0.75},
             {"privacy", {{"epsilon", 0.9}, {"job_epsilon", 1.25}}}},
            {{"site", "site-1"}, {"eval_accuracy", 0.625}, {"eval_loss", 0.5}}}}};
}

TEST(TensorBoardWriterTest, Crc32cMatchesTheCastagnoliCheckValue) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // RFC 3720, B.4
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(TensorBoardWriterTest, ARecordIsLengthLengthCrcDataDataCrc) {
  const std::string record = FrameTfRecord("abc");
  ASSERT_EQ(record.size(), 8u + 4u + 3u + 4u);
  EXPECT_EQ(record.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  auto u32 = [&](std::size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(record[at + static_cast<std::size_t>(i)]);
    return v;
  };
  EXPECT_EQ(u32(8), MaskedCrc32c(record.substr(0, 8)));
  EXPECT_EQ(record.substr(12, 3), "abc");
  EXPECT_EQ(u32(15), MaskedCrc32c("abc"));
  EXPECT_NE(MaskedCrc32c("abc"), Crc32c("abc"));
}

TEST(TensorBoardWriterTest, RoundScalarsNameEveryMetricTheEntryHas) {
  const auto scalars = RoundScalars(RoundEntry(2, 0.75));
  std::map<std::string, float> by_tag(scalars.begin(), scalars.end());
  EXPECT_FLOAT_EQ(by_tag.at("test/accuracy"), 0.75f);
  EXPECT_FLOAT_EQ(by_tag.at("test/loss"), 0.75f);
  EXPECT_FLOAT_EQ(by_tag.at("train/loss"), 1.0f);
  EXPECT_FLOAT_EQ(by_tag.at("client_eval/site-1/accuracy"), 0.625f);
  EXPECT_FLOAT_EQ(by_tag.at("round/seconds"), 3.25f);
  EXPECT_FLOAT_EQ(by_tag.at("round/fold_seconds"), 0.125f);
  EXPECT_FLOAT_EQ(by_tag.at("privacy/site-0/epsilon"), 1.25f) << "the server's mirror, not the site's claim";
  EXPECT_EQ(by_tag.count("privacy/site-1/epsilon"), 0u) << "site-1 spent nothing";
  EXPECT_EQ(by_tag.count("privacy/epsilon"), 0u) << "no job-level DP";
}

TEST(TensorBoardWriterTest, AnIndependentReaderFindsEveryRoundsScalarsInTheFile) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> writer = TensorBoardWriter::Create(dir.path() / "tb");
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_NE((*writer)->path().filename().string().find("tfevents"), std::string::npos);
  for (int round = 1; round <= 3; ++round) {
    ASSERT_TRUE((*writer)->WriteRound(RoundEntry(round, 0.5 + 0.1 * round)).ok());
  }
  const Result read = ReadEvents((*writer)->path());
  if (read.exit_code == 77) GTEST_SKIP() << read.output;
  ASSERT_EQ(read.exit_code, 0) << read.output;
  const nlohmann::json events = nlohmann::json::parse(read.output, nullptr, false);
  ASSERT_TRUE(events.is_object()) << read.output;
  EXPECT_EQ(events["file_version"], "brain.Event:2");
  EXPECT_EQ(events["records"], 4);
  for (int round = 1; round <= 3; ++round) {
    const nlohmann::json& step = events["steps"][std::to_string(round)];
    EXPECT_FLOAT_EQ(step["test/accuracy"].get<float>(), static_cast<float>(0.5 + 0.1 * round));
    EXPECT_FLOAT_EQ(step["test/loss"].get<float>(), static_cast<float>(1.5 / round));
    EXPECT_FLOAT_EQ(step["client_eval/site-0/loss"].get<float>(), 0.75f);
    EXPECT_FLOAT_EQ(step["privacy/site-0/epsilon"].get<float>(), 1.25f);
  }
}

TEST(TensorBoardWriterTest, TheReaderRefusesAFlippedByte) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<TensorBoardWriter>> writer = TensorBoardWriter::Create(dir.path());
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->WriteRound(RoundEntry(1, 0.5)).ok());
  const std::filesystem::path path = (*writer)->path();
  std::string bytes = ReadFile(path);
  bytes[bytes.size() - 10] ^= 0x01;  // inside the last record's data
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  const Result read = ReadEvents(path);
  if (read.exit_code == 77) GTEST_SKIP() << read.output;
  EXPECT_EQ(read.exit_code, 1) << read.output;
  EXPECT_NE(read.output.find("record 1: data CRC mismatch"), std::string::npos) << read.output;
}

}  // namespace
}  // namespace cohort::server
