// `cohort audit ...` driven through the same CLI11 registration the binary uses,
// with stdout and stderr captured.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "audit/writer.h"
#include "cli/commands.h"
#include "tests/audit/test_util.h"

namespace cohort::audit {
namespace {

using testing::KeyFromFill;
using testing::ReadFile;
using testing::ReadLines;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteLines;

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `cohort audit <args...>` as main() would, including its exit code 2 for
// flags CLI11 rejects.
CliResult RunAudit(const std::vector<std::string>& args) {
  CLI::App app{"cohort"};
  app.require_subcommand(1);
  CliResult result;
  result.exit_code = 0;
  cli::AddAuditCommand(app, &result.exit_code);

  std::vector<std::string> storage = {"cohort", "audit"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : storage) argv.push_back(arg.data());

  std::ostringstream out, err;
  std::streambuf* old_out = std::cout.rdbuf(out.rdbuf());
  std::streambuf* old_err = std::cerr.rdbuf(err.rdbuf());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    result.exit_code = app.exit(e) == 0 ? 0 : 2;
  }
  std::cout.rdbuf(old_out);
  std::cerr.rdbuf(old_err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

class AuditCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteSampleLog(log_);
    const crypto::SigningKey key = KeyFromFill(1);
    ASSERT_TRUE(crypto::WritePublicKeyFile(pub_, key.public_key()).ok());
    ASSERT_TRUE(crypto::WriteSigningKeyFile(key_, key).ok());
    head_ = LineHash(ReadLines(log_).back());
  }

  TempDir dir_;
  const std::string log_ = (dir_ / "audit.log").string();
  const std::string pub_ = (dir_ / "audit.pub").string();
  const std::string key_ = (dir_ / "audit.key").string();
  std::string head_;
};

TEST_F(AuditCommandTest, VerifyExitsZeroForAValidLogAndPrintsThePinsToKeep) {
  const CliResult result = RunAudit({"verify", log_, "--key", pub_});
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("OK " + log_ + ": valid: 6 entries"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("pin: --expect-count 6 --expect-head " + head_), std::string::npos)
      << result.out;
}

TEST_F(AuditCommandTest, VerifyExitsOneNamingTheFirstBadEntry) {
  std::vector<std::string> lines = ReadLines(log_);
  lines.erase(lines.begin() + 1);
  WriteLines(log_, lines);
  const CliResult result = RunAudit({"verify", log_, "--key", pub_});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.out.find("INVALID " + log_ + ": invalid at line 2 (seq 2): prev hash mismatch"),
            std::string::npos)
      << result.out;
}

TEST_F(AuditCommandTest, VerifyWithPinsCatchesEntriesCutFromTheEnd) {
  std::vector<std::string> lines = ReadLines(log_);
  lines.pop_back();
  WriteLines(log_, lines);
  EXPECT_EQ(RunAudit({"verify", log_, "--key", pub_}).exit_code, 0);
  const CliResult by_count = RunAudit({"verify", log_, "--key", pub_, "--expect-count", "6"});
  EXPECT_EQ(by_count.exit_code, 1);
  EXPECT_NE(by_count.out.find("entries were cut from the end"), std::string::npos) << by_count.out;
  EXPECT_EQ(RunAudit({"verify", log_, "--key", pub_, "--expect-head", head_}).exit_code, 1);
}

TEST_F(AuditCommandTest, VerifyReportsATrailingPartialLineAndStillPasses) {
  WriteFile(log_, ReadFile(log_) + "{\"seq\":6,\"ti");
  const CliResult result = RunAudit({"verify", log_, "--key", pub_});
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.out.find("verified up to entry 5; trailing partial line ignored"),
            std::string::npos)
      << result.out;
}

TEST_F(AuditCommandTest, BadInputExitsTwoWithAMessageNamingIt) {
  const CliResult missing_log = RunAudit({"verify", log_ + ".nope", "--key", pub_});
  EXPECT_EQ(missing_log.exit_code, 2);
  EXPECT_NE(missing_log.err.find(log_ + ".nope: no such file"), std::string::npos)
      << missing_log.err;

  const CliResult missing_key = RunAudit({"verify", log_, "--key", pub_ + ".nope"});
  EXPECT_EQ(missing_key.exit_code, 2);
  EXPECT_NE(missing_key.err.find(pub_ + ".nope"), std::string::npos) << missing_key.err;

  EXPECT_EQ(RunAudit({"verify", log_, "--key", pub_, "--expect-head", "xyz"}).exit_code, 2);
  EXPECT_EQ(RunAudit({"verify", log_, "--key", pub_, "--expect-count", "many"}).exit_code, 2);
  EXPECT_EQ(RunAudit({"verify", log_}).exit_code, 2);  // --key is required
  EXPECT_EQ(RunAudit({"show", log_, "--since", "last tuesday"}).exit_code, 2);
}

TEST_F(AuditCommandTest, ShowPrintsTheFilteredEntriesAsATable) {
  const CliResult result = RunAudit({"show", log_, "--job", "mnist", "--action", "param.*"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::vector<std::string> rows;
  std::istringstream in(result.out);
  for (std::string row; std::getline(in, row);) rows.push_back(row);
  ASSERT_EQ(rows.size(), 3u) << result.out;
  EXPECT_EQ(rows[0].rfind("SEQ", 0), 0u);
  EXPECT_NE(rows[1].find("param.set "), std::string::npos) << rows[1];
  EXPECT_NE(rows[1].find("10 -> 20"), std::string::npos) << rows[1];
  EXPECT_NE(rows[2].find("param.set.refused"), std::string::npos) << rows[2];
  EXPECT_NE(rows[2].find("role site may not change dp.noise_multiplier"), std::string::npos);
}

TEST_F(AuditCommandTest, ShowJsonPrintsTheMatchingLinesExactly) {
  const std::vector<std::string> lines = ReadLines(log_);
  const CliResult result = RunAudit({"show", log_, "--json", "--actor", "alice", "--since",
                                     "2024-05-01T12:00:01Z", "--until", "2024-05-01T12:00:05Z"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, lines[1] + "\n" + lines[2] + "\n");
}

TEST_F(AuditCommandTest, ShowWithAKeyRefusesALogThatDoesNotVerify) {
  std::vector<std::string> lines = ReadLines(log_);
  lines[0].replace(lines[0].find("alice"), 5, "ALICE");
  WriteLines(log_, lines);
  EXPECT_EQ(RunAudit({"show", log_}).exit_code, 0);
  const CliResult result = RunAudit({"show", log_, "--key", pub_});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_TRUE(result.out.empty()) << result.out;
  EXPECT_NE(result.err.find("line 1 (seq 0): signature invalid"), std::string::npos) << result.err;
}

TEST_F(AuditCommandTest, VerifyAndShowOfALineNestedAHundredThousandDeepFailCleanlyNamingTheLine) {
  std::vector<std::string> lines = ReadLines(log_);
  lines[2] = std::string(100'000, '[') + std::string(100'000, ']');
  WriteLines(log_, lines);

  const CliResult verified = RunAudit({"verify", log_, "--key", pub_});
  EXPECT_EQ(verified.exit_code, 1);
  EXPECT_NE(verified.out.find("INVALID " + log_ + ": invalid at line 3: bad JSON: the entry: expected JSON "
                              "nested at most 64 levels deep"),
            std::string::npos)
      << verified.out.substr(0, 500);
  EXPECT_LT(verified.out.size(), 600u);

  const CliResult shown = RunAudit({"show", log_});
  EXPECT_EQ(shown.exit_code, 1);
  EXPECT_NE(shown.err.find(log_ + " line 3: entry: expected JSON nested at most 64 levels deep"), std::string::npos)
      << shown.err.substr(0, 500);
  EXPECT_LT(shown.err.size(), 600u);
}

TEST_F(AuditCommandTest, ABundleNestedAHundredThousandDeepIsRefusedNotACrash) {
  const std::string bundle = (dir_ / "deep.bundle").string();
  WriteFile(bundle, "{\"format\":" + std::string(100'000, '[') + std::string(100'000, ']') + ",\"sig\":\"" +
                        std::string(128, 'a') + "\"}\n");
  const CliResult result = RunAudit({"verify-bundle", bundle, "--key", pub_});
  EXPECT_EQ(result.exit_code, 1) << result.err.substr(0, 500);
  EXPECT_NE((result.out + result.err).find("the bundle: expected JSON nested at most 64 levels deep"),
            std::string::npos)
      << result.out.substr(0, 500) << result.err.substr(0, 500);
}

TEST_F(AuditCommandTest, ExportedBundlesVerifyAndTamperedOnesDoNot) {
  const std::string bundle = (dir_ / "export.json").string();
  const CliResult exported = RunAudit({"export", log_, "--key", key_, "--out", bundle});
  EXPECT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_NE(exported.out.find("exported 6 entries (head " + head_ + ")"), std::string::npos)
      << exported.out;

  const CliResult verified =
      RunAudit({"verify-bundle", bundle, "--key", pub_, "--expect-count", "6"});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("valid: 6 entries"), std::string::npos) << verified.out;

  EXPECT_EQ(RunAudit({"export", log_, "--key", key_, "--out", bundle}).exit_code, 2);

  std::string text = ReadFile(bundle);
  text.replace(text.find("\"entry_count\":6"), 15, "\"entry_count\":5");
  WriteFile(bundle, text);
  const CliResult tampered = RunAudit({"verify-bundle", bundle, "--key", pub_});
  EXPECT_EQ(tampered.exit_code, 1);
  EXPECT_NE(tampered.out.find("INVALID"), std::string::npos) << tampered.out;
}

TEST_F(AuditCommandTest, ExportRefusesALogThatDoesNotVerify) {
  std::vector<std::string> lines = ReadLines(log_);
  std::swap(lines[3], lines[4]);
  WriteLines(log_, lines);
  const std::string bundle = (dir_ / "export.json").string();
  const CliResult result = RunAudit({"export", log_, "--key", key_, "--out", bundle});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.err.find("refusing to export"), std::string::npos) << result.err;
  EXPECT_FALSE(std::filesystem::exists(bundle));
}

TEST_F(AuditCommandTest, KeygenCreatesAKeyPairTheWriterAndVerifierAccept) {
  const std::filesystem::path keys = dir_ / "keys";
  const CliResult result = RunAudit({"keygen", "--out", keys.string()});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  struct stat info;
  ASSERT_EQ(::stat((keys / "audit.key").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(keys.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0700u);

  absl::StatusOr<crypto::SigningKey> key = crypto::ReadSigningKeyFile(keys / "audit.key");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_NE(result.out.find("public key: " + key->public_key().ToHex()), std::string::npos);
  {
    auto writer = Writer::Open(dir_ / "new.log", *std::move(key));
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(testing::ParamSet("alice", "j", "p", 1, 2)).ok());
  }
  EXPECT_EQ(
      RunAudit({"verify", (dir_ / "new.log").string(), "--key", (keys / "audit.pub").string()})
          .exit_code,
      0);

  // A second keygen into the same place must not replace the key.
  const std::string key_before = ReadFile(keys / "audit.key");
  const CliResult again = RunAudit({"keygen", "--out", keys.string()});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("refusing to replace"), std::string::npos) << again.err;
  EXPECT_EQ(ReadFile(keys / "audit.key"), key_before);
}

}  // namespace
}  // namespace cohort::audit
