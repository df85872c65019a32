#include "audit/reader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "audit/writer.h"
#include "tests/audit/test_util.h"

namespace cohort::audit {
namespace {

using testing::KeyFromFill;
using testing::ParamSet;
using testing::ReadFile;
using testing::ReadLines;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteLines;

// A signed line with the given seq and prev, as a forger holding `key` would write it.
std::string ForgeLine(const crypto::SigningKey& key, std::uint64_t seq, const std::string& prev,
                      const Record& record) {
  const std::string body = *EncodeUnsignedEntry(seq, "2024-05-01T13:00:00.000Z", record, prev);
  return AttachSignature(body, key.Sign(std::string(kEntrySignatureContext) + body));
}

class VerifyAuditChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteSampleLog(log_);
    lines_ = ReadLines(log_);
    ASSERT_EQ(lines_.size(), 6u);
    head_ = LineHash(lines_.back());
  }

  ChainVerification Verify(std::optional<std::string> head = std::nullopt,
                           std::optional<std::uint64_t> count = std::nullopt) {
    absl::StatusOr<ChainVerification> result =
        VerifyAuditChain(log_, KeyFromFill(1).public_key(), head, count);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : ChainVerification{};
  }

  // Asserts the verification failed first at `line` (seq `seq`) for `problem`.
  static void ExpectFailure(const ChainVerification& result, std::uint64_t line,
                            std::optional<std::uint64_t> seq, ChainProblem problem) {
    ASSERT_FALSE(result.ok()) << "expected a failure at line " << line;
    EXPECT_EQ(result.failure->line, line) << result.Summary();
    EXPECT_EQ(result.failure->seq, seq) << result.Summary();
    EXPECT_EQ(result.failure->problem, problem) << result.Summary();
  }

  TempDir dir_;
  const std::filesystem::path log_ = dir_ / "audit.log";
  std::vector<std::string> lines_;
  std::string head_;
};

TEST_F(VerifyAuditChainTest, AnUntouchedLogVerifiesWithItsHeadAndCount) {
  const ChainVerification result = Verify(head_, 6);
  EXPECT_TRUE(result.ok()) << result.Summary();
  EXPECT_EQ(result.entry_count, 6u);
  EXPECT_EQ(result.head_hash, head_);
  EXPECT_FALSE(result.trailing_partial_line);
  EXPECT_EQ(result.Summary(), "valid: 6 entries, head " + head_);
}

TEST_F(VerifyAuditChainTest, AChangedByteIsAnInvalidSignatureAtThatEntry) {
  const std::size_t at = lines_[2].find("site-b");
  ASSERT_NE(at, std::string::npos);
  lines_[2][at + 5] = 'c';  // site-b -> site-c
  WriteLines(log_, lines_);
  const ChainVerification result = Verify();
  ExpectFailure(result, 3, 2, ChainProblem::kBadSignature);
  EXPECT_EQ(result.entry_count, 2u);
  EXPECT_NE(result.Summary().find("invalid at line 3 (seq 2): signature invalid"),
            std::string::npos)
      << result.Summary();
}

TEST_F(VerifyAuditChainTest, AChangedPrevOrSignatureIsAnInvalidSignature) {
  std::vector<std::string> changed_prev = lines_;
  const std::size_t prev_at = changed_prev[3].find("\"prev\":\"") + 8;
  changed_prev[3][prev_at] = changed_prev[3][prev_at] == '0' ? '1' : '0';
  WriteLines(log_, changed_prev);
  ExpectFailure(Verify(), 4, 3, ChainProblem::kBadSignature);

  std::vector<std::string> changed_sig = lines_;
  char& last_hex = changed_sig[4][changed_sig[4].size() - 3];
  last_hex = last_hex == 'a' ? 'b' : 'a';
  WriteLines(log_, changed_sig);
  ExpectFailure(Verify(), 5, 4, ChainProblem::kBadSignature);
}

TEST_F(VerifyAuditChainTest, AChangedByteThatBreaksTheJsonIsBadJson) {
  lines_[3][0] = '[';
  WriteLines(log_, lines_);
  ExpectFailure(Verify(), 4, std::nullopt, ChainProblem::kBadJson);
}

TEST_F(VerifyAuditChainTest, ADeletedEntryIsAPrevMismatchAtTheLineThatFollowedIt) {
  lines_.erase(lines_.begin() + 2);  // seq 2
  WriteLines(log_, lines_);
  const ChainVerification result = Verify();
  ExpectFailure(result, 3, 3, ChainProblem::kPrevMismatch);
  EXPECT_NE(result.failure->detail.find("expected seq 2 here, found 3"), std::string::npos)
      << result.Summary();
}

TEST_F(VerifyAuditChainTest, TwoSwappedEntriesAreAPrevMismatchAtTheFirstOfThem) {
  std::swap(lines_[1], lines_[2]);
  WriteLines(log_, lines_);
  ExpectFailure(Verify(), 2, 2, ChainProblem::kPrevMismatch);
}

TEST_F(VerifyAuditChainTest, DeletingTheFirstEntryIsAPrevMismatchAtLineOne) {
  lines_.erase(lines_.begin());
  WriteLines(log_, lines_);
  const ChainVerification result = Verify();
  ExpectFailure(result, 1, 1, ChainProblem::kPrevMismatch);
  EXPECT_NE(result.failure->detail.find("64 zeros"), std::string::npos) << result.Summary();
}

TEST_F(VerifyAuditChainTest, AnEntryForgedWithAnotherKeyIsAnInvalidSignature) {
  const crypto::SigningKey forger = KeyFromFill(9);
  // In place of seq 3, with a prev and seq that fit the chain perfectly.
  std::vector<std::string> replaced = lines_;
  replaced[3] =
      ForgeLine(forger, 3, LineHash(lines_[2]), ParamSet("mallory", "mnist", "rounds", 20, 1));
  WriteLines(log_, replaced);
  ExpectFailure(Verify(), 4, 3, ChainProblem::kBadSignature);

  // Appended after the last entry.
  std::vector<std::string> appended = lines_;
  appended.push_back(ForgeLine(forger, 6, head_, ParamSet("mallory", "mnist", "rounds", 20, 1)));
  WriteLines(log_, appended);
  ExpectFailure(Verify(), 7, 6, ChainProblem::kBadSignature);
}

TEST_F(VerifyAuditChainTest, ASeqGapUnderAValidSignatureAndChainIsASeqGap) {
  // Only a key holder can produce this (a faulty writer): prev fits, seq skips.
  const crypto::SigningKey key = KeyFromFill(1);
  lines_.push_back(ForgeLine(key, 7, head_, ParamSet("alice", "mnist", "rounds", 20, 30)));
  WriteLines(log_, lines_);
  const ChainVerification result = Verify();
  ExpectFailure(result, 7, 7, ChainProblem::kSeqMismatch);
  EXPECT_EQ(result.failure->detail, "expected seq 6, found 7");
}

TEST_F(VerifyAuditChainTest, EntriesCutFromTheEndAreCaughtOnlyByThePins) {
  const std::vector<std::string> kept(lines_.begin(), lines_.begin() + 4);
  WriteLines(log_, kept);
  // Without pins a shortened log is indistinguishable from an older one.
  EXPECT_TRUE(Verify().ok());

  const ChainVerification by_count = Verify(std::nullopt, 6);
  ExpectFailure(by_count, 5, 4, ChainProblem::kCountShort);
  EXPECT_NE(by_count.failure->detail.find("pinned count is 6 entries, the log has 4"),
            std::string::npos)
      << by_count.Summary();

  ExpectFailure(Verify(head_), 5, 4, ChainProblem::kHeadMismatch);
  ExpectFailure(Verify(head_, 6), 5, 4, ChainProblem::kCountShort);
}

TEST_F(VerifyAuditChainTest, PinsTakenEarlierStillHoldAfterTheLogGrew) {
  const std::string head_after_four = LineHash(lines_[3]);
  EXPECT_TRUE(Verify(head_after_four, 4).ok());
  EXPECT_TRUE(Verify(head_after_four).ok());
  EXPECT_TRUE(Verify(std::string(kZeroHash), 0).ok());
  // Upper-case hex, as someone might paste it, is accepted.
  std::string upper = head_after_four;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(Verify(upper, 4).ok());
}

TEST_F(VerifyAuditChainTest, ALogRewrittenByTheKeyHolderFailsOnlyThePinnedHead) {
  const std::string pinned_head = LineHash(lines_[4]);
  // Same key, history rewritten from seq 2 on: every line signs and chains.
  {
    std::filesystem::remove(log_);
    auto writer = Writer::Open(log_, KeyFromFill(1), testing::SteppingClock());
    ASSERT_TRUE(writer.ok());
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE((*writer)->Append(ParamSet("alice", "mnist", "rounds", i, i + 1)).ok());
    }
  }
  EXPECT_TRUE(Verify().ok());
  const ChainVerification result = Verify(pinned_head, 5);
  ExpectFailure(result, 5, 4, ChainProblem::kHeadMismatch);
  EXPECT_NE(result.failure->detail.find("rewritten"), std::string::npos) << result.Summary();
}

TEST_F(VerifyAuditChainTest, ALogCutMidLineVerifiesUpToTheLastWholeEntryAndSaysSo) {
  const std::string text = ReadFile(log_);
  WriteFile(log_, text.substr(0, text.size() - lines_.back().size() / 2));
  const ChainVerification result = Verify();
  EXPECT_TRUE(result.ok()) << result.Summary();
  EXPECT_TRUE(result.trailing_partial_line);
  EXPECT_EQ(result.entry_count, 5u);
  EXPECT_EQ(result.head_hash, LineHash(lines_[4]));
  EXPECT_EQ(
      result.Summary().rfind("verified up to entry 4; trailing partial line ignored (line 6", 0),
      0u)
      << result.Summary();
  // The pinned count still catches the entry that was cut.
  ExpectFailure(Verify(std::nullopt, 6), 6, 5, ChainProblem::kCountShort);
}

TEST_F(VerifyAuditChainTest, ABlankLineIsBadJson) {
  lines_.insert(lines_.begin() + 3, "");
  WriteLines(log_, lines_);
  ExpectFailure(Verify(), 4, std::nullopt, ChainProblem::kBadJson);
}

TEST_F(VerifyAuditChainTest, AnOverlongLineIsRefusedWithoutReadingItWhole) {
  lines_.push_back(std::string(kMaxEntryLineBytes + 10, 'x'));
  WriteLines(log_, lines_);
  ExpectFailure(Verify(), 7, std::nullopt, ChainProblem::kLineTooLong);
}

TEST_F(VerifyAuditChainTest, ALineNestedAHundredThousandDeepIsBadJsonNotACrash) {
  std::string objects = "{\"seq\":2,\"old\":";
  for (int i = 0; i < 100'000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(100'001, '}');
  for (const std::string& deep : {std::string(100'000, '[') + std::string(100'000, ']'), objects}) {
    std::vector<std::string> lines = lines_;
    lines[2] = deep;
    WriteLines(log_, lines);
    const ChainVerification result = Verify();
    ExpectFailure(result, 3, std::nullopt, ChainProblem::kBadJson);
    EXPECT_NE(result.Summary().find("invalid at line 3: bad JSON: the entry: expected JSON nested at most 64 "
                                    "levels deep"),
              std::string::npos)
        << result.Summary();
    EXPECT_LT(result.Summary().size(), 400u) << result.Summary();

    absl::StatusOr<ReadResult> read = ReadEntries(log_, EntryFilter{});
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(read.status().message().find(log_.string() + " line 3: entry: expected JSON nested at most 64"),
              std::string::npos)
        << read.status().message().substr(0, 400);
    EXPECT_LT(read.status().message().size(), 300 + log_.string().size());
  }
}

TEST_F(VerifyAuditChainTest, ADeepButBoundedValueStillVerifiesAndTheWriterRefusesADeeperOne) {
  // A forger with the key could sign a line of any depth; the writer never writes one the
  // readers would refuse, and one within the bound reads back.
  nlohmann::json deep = 1;
  for (int i = 0; i < 62; ++i) deep = nlohmann::json::array({deep});
  Record within = ParamSet("alice", "mnist", "rounds", 1, 2);
  within.new_value = deep;
  lines_.push_back(ForgeLine(KeyFromFill(1), 6, LineHash(lines_.back()), within));
  WriteLines(log_, lines_);
  EXPECT_TRUE(Verify().ok()) << Verify().Summary();

  Record deeper = within;
  deeper.new_value = nlohmann::json::array({deep, nlohmann::json::array({deep})});
  absl::StatusOr<std::string> refused = EncodeUnsignedEntry(7, "2024-05-01T13:00:00.000Z", deeper, head_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("audit record old/new: expected JSON nested at most 64"),
            std::string::npos)
      << refused.status();
}

TEST_F(VerifyAuditChainTest, OnlyTheLinesThatVerifiedAreHandedOn) {
  std::vector<std::string> tampered = lines_;
  tampered[2].replace(tampered[2].find("alice"), 5, "bobby");
  WriteLines(log_, tampered);
  std::vector<std::string> seen;
  absl::StatusOr<ChainVerification> result =
      VerifyAuditChainLines(log_, KeyFromFill(1).public_key(), {},
                            [&seen](std::string_view line) { seen.emplace_back(line); });
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectFailure(*result, 3, 2, ChainProblem::kBadSignature);
  EXPECT_EQ(seen, std::vector<std::string>(lines_.begin(), lines_.begin() + 2));
}

TEST(VerifyAuditChainInputTest, AnEmptyFileIsAValidEmptyLog) {
  TempDir dir;
  WriteFile(dir / "audit.log", "");
  absl::StatusOr<ChainVerification> result =
      VerifyAuditChain(dir / "audit.log", KeyFromFill(1).public_key());
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->ok());
  EXPECT_EQ(result->entry_count, 0u);
  EXPECT_EQ(result->head_hash, kZeroHash);
}

TEST(VerifyAuditChainInputTest, AMissingFileOrMalformedPinIsAnErrorNotAVerdict) {
  TempDir dir;
  absl::StatusOr<ChainVerification> missing =
      VerifyAuditChain(dir / "none.log", KeyFromFill(1).public_key());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("none.log"), std::string::npos);

  WriteFile(dir / "audit.log", "");
  absl::StatusOr<ChainVerification> bad_pin =
      VerifyAuditChain(dir / "audit.log", KeyFromFill(1).public_key(), "abc123");
  EXPECT_EQ(bad_pin.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_pin.status().message().find("\"abc123\": expected 64 hex"), std::string::npos)
      << bad_pin.status();
}

class ReadEntriesTest : public ::testing::Test {
 protected:
  void SetUp() override { testing::WriteSampleLog(log_); }

  std::vector<std::uint64_t> Seqs(const EntryFilter& filter) {
    absl::StatusOr<ReadResult> read = ReadEntries(log_, filter);
    EXPECT_TRUE(read.ok()) << read.status();
    std::vector<std::uint64_t> seqs;
    if (read.ok()) {
      for (const Entry& entry : read->entries) seqs.push_back(entry.seq);
    }
    return seqs;
  }

  TempDir dir_;
  const std::filesystem::path log_ = dir_ / "audit.log";
};

using SeqList = std::vector<std::uint64_t>;

TEST_F(ReadEntriesTest, AnEmptyFilterReturnsEveryEntryInOrder) {
  EXPECT_EQ(Seqs({}), (SeqList{0, 1, 2, 3, 4, 5}));
}

TEST_F(ReadEntriesTest, FiltersOnActorActionAndTarget) {
  EXPECT_EQ(Seqs({.actor = "alice"}), (SeqList{0, 1, 2, 5}));
  EXPECT_EQ(Seqs({.action = "param.set"}), (SeqList{1, 4}));
  EXPECT_EQ(Seqs({.action = "param.*"}), (SeqList{1, 3, 4}));
  EXPECT_EQ(Seqs({.action = "participant.*"}), (SeqList{2, 5}));
  EXPECT_EQ(Seqs({.job = "mnist"}), (SeqList{0, 1, 2, 3}));
  EXPECT_EQ(Seqs({.parameter = "rounds"}), (SeqList{1, 4}));
  EXPECT_EQ(Seqs({.job = "mnist", .parameter = "rounds"}), (SeqList{1}));
  EXPECT_EQ(Seqs({.participant = "site-b"}), (SeqList{2, 5}));
  EXPECT_EQ(Seqs({.actor = "nobody"}), SeqList{});
}

TEST_F(ReadEntriesTest, FiltersOnAHalfOpenTimeRange) {
  // Entries are at 12:00:00 + seq seconds; since is inclusive, until exclusive.
  const absl::Time start = absl::FromUnixSeconds(1714564800);
  EXPECT_EQ(Seqs({.since = start + absl::Seconds(2)}), (SeqList{2, 3, 4, 5}));
  EXPECT_EQ(Seqs({.until = start + absl::Seconds(2)}), (SeqList{0, 1}));
  EXPECT_EQ(
      Seqs(
          {.actor = "alice", .since = start + absl::Seconds(1), .until = start + absl::Seconds(5)}),
      (SeqList{1, 2}));
}

TEST_F(ReadEntriesTest, ATrailingPartialLineIsSkippedAndReported) {
  const std::string text = ReadFile(log_);
  WriteFile(log_, text + "{\"seq\":6,\"time\"");
  absl::StatusOr<ReadResult> read = ReadEntries(log_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->entries.size(), 6u);
  EXPECT_TRUE(read->trailing_partial_line);
}

TEST_F(ReadEntriesTest, AMalformedLineIsAnErrorNamingTheLine) {
  std::vector<std::string> lines = ReadLines(log_);
  lines[2] = "{\"seq\":2}";
  WriteLines(log_, lines);
  absl::StatusOr<ReadResult> read = ReadEntries(log_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("audit.log line 3: member \"time\" is missing"),
            std::string::npos)
      << read.status();
}

TEST(ParseTimeBoundTest, AcceptsRfc3339AndPlainDates) {
  EXPECT_EQ(*ParseTimeBound("2024-05-01T12:00:00Z"), absl::FromUnixSeconds(1714564800));
  EXPECT_EQ(*ParseTimeBound("2024-05-01T14:00:00.5+02:00"), absl::FromUnixMillis(1714564800500));
  EXPECT_EQ(*ParseTimeBound("2024-05-01"), absl::FromUnixSeconds(1714521600));
  absl::StatusOr<absl::Time> bad = ParseTimeBound("yesterday");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"yesterday\": expected RFC 3339"), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace cohort::audit
