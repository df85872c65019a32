#pragma once
// Helpers shared by the audit tests: temporary directories, whole-file access,
// fixed keys and a clock that the tests control.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "audit/entry.h"
#include "audit/writer.h"
#include "crypto/signing.h"

namespace cohort::audit::testing {

// A fresh directory under the test temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::path(::testing::TempDir()) / "cohort_audit_XXXXXX");
    const char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << "mkdtemp failed for " << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

inline void WriteFile(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// The whole lines of a file, without their "\n"; a trailing partial line is dropped.
inline std::vector<std::string> ReadLines(const std::filesystem::path& path) {
  const std::string text = ReadFile(path);
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(text.substr(start, nl - start));
  }
  return lines;
}

inline void WriteLines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  WriteFile(path, text);
}

// A deterministic key: the seed is 32 copies of `fill`.
inline crypto::SigningKey KeyFromFill(std::uint8_t fill) {
  std::array<std::uint8_t, crypto::kSigningSeedBytes> seed;
  seed.fill(fill);
  return *crypto::SigningKey::FromSeed(seed);
}

// Starts at 2024-05-01T12:00:00.000Z and moves one second per call.
inline WriterOptions SteppingClock(absl::Time start = absl::FromUnixSeconds(1714564800)) {
  auto now = std::make_shared<absl::Time>(start);
  WriterOptions options;
  options.clock = [now] {
    const absl::Time t = *now;
    *now += absl::Seconds(1);
    return t;
  };
  return options;
}

inline Record ParamSet(const std::string& actor, const std::string& job,
                       const std::string& parameter, nlohmann::json old_value,
                       nlohmann::json new_value) {
  Record record;
  record.actor = actor;
  record.role = "admin";
  record.action = action::kParamSet;
  record.target.job = job;
  record.target.parameter = parameter;
  record.old_value = std::move(old_value);
  record.new_value = std::move(new_value);
  return record;
}

// Six entries of different kinds by different actors, one second apart from
// 2024-05-01T12:00:00Z: seq 0..5.
inline void WriteSampleLog(const std::filesystem::path& path, std::uint8_t key_fill = 1) {
  auto writer = Writer::Open(path, KeyFromFill(key_fill), SteppingClock());
  ASSERT_TRUE(writer.ok()) << writer.status();
  Record create;
  create.actor = "alice";
  create.role = "admin";
  create.action = action::kJobCreate;
  create.target.job = "mnist";
  create.new_value = {{"rounds", 10}, {"clients", 3}};
  Record add;
  add.actor = "alice";
  add.role = "admin";
  add.action = action::kParticipantAdd;
  add.target.job = "mnist";
  add.target.participant = "site-b";
  Record refused = ParamSet("bob", "mnist", "dp.noise_multiplier", 1.1, 0.1);
  refused.action = action::kParamSetRefused;
  refused.role = "site";
  refused.reason = "role site may not change dp.noise_multiplier";
  Record revoke;
  revoke.actor = "alice";
  revoke.role = "admin";
  revoke.action = action::kParticipantRevoke;
  revoke.target.participant = "site-b";
  revoke.reason = "certificate compromised";
  for (const Record& record : {create, ParamSet("alice", "mnist", "rounds", 10, 20), add, refused,
                               ParamSet("carol", "cifar", "rounds", 5, 8), revoke}) {
    auto seq = (*writer)->Append(record);
    ASSERT_TRUE(seq.ok()) << seq.status();
  }
}

}  // namespace cohort::audit::testing
