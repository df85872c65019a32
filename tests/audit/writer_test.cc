#include "audit/writer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "audit/reader.h"
#include "tests/audit/test_util.h"

namespace cohort::audit {
namespace {

using testing::KeyFromFill;
using testing::ParamSet;
using testing::ReadFile;
using testing::ReadLines;
using testing::SteppingClock;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteLines;

std::unique_ptr<Writer> OpenOrDie(const std::filesystem::path& path, std::uint8_t key_fill = 1,
                                  WriterOptions options = SteppingClock()) {
  absl::StatusOr<std::unique_ptr<Writer>> writer =
      Writer::Open(path, KeyFromFill(key_fill), std::move(options));
  EXPECT_TRUE(writer.ok()) << writer.status();
  return writer.ok() ? *std::move(writer) : nullptr;
}

TEST(WriterTest, ANewLogIsEmptyWithTheZeroHead) {
  TempDir dir;
  auto writer = OpenOrDie(dir / "audit.log");
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->entry_count(), 0u);
  EXPECT_EQ(writer->head_hash(), kZeroHash);
  EXPECT_TRUE(std::filesystem::exists(dir / "audit.log"));
  EXPECT_EQ(std::filesystem::file_size(dir / "audit.log"), 0u);
}

TEST(WriterTest, AppendedEntriesReadBackWithSeqTimeAndHashChain) {
  TempDir dir;
  auto writer = OpenOrDie(dir / "audit.log");
  ASSERT_NE(writer, nullptr);
  const std::vector<Record> records = {ParamSet("alice", "mnist", "rounds", 10, 20),
                                       ParamSet("bob", "mnist", "lr", 0.1, 0.05),
                                       ParamSet("alice", "cifar", "clients", nullptr, 8)};
  for (std::size_t i = 0; i < records.size(); ++i) {
    absl::StatusOr<std::uint64_t> seq = writer->Append(records[i]);
    ASSERT_TRUE(seq.ok()) << seq.status();
    EXPECT_EQ(*seq, i);
  }

  absl::StatusOr<ReadResult> read = ReadEntries(dir / "audit.log");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 3u);
  const std::vector<std::string> lines = ReadLines(dir / "audit.log");
  std::string prev(kZeroHash);
  for (std::size_t i = 0; i < 3; ++i) {
    const Entry& entry = read->entries[i];
    EXPECT_EQ(entry.seq, i);
    EXPECT_EQ(entry.timestamp, absl::FromUnixSeconds(1714564800 + static_cast<int>(i)));
    EXPECT_EQ(entry.actor, records[i].actor);
    EXPECT_EQ(entry.target, records[i].target);
    EXPECT_EQ(entry.old_value, records[i].old_value);
    EXPECT_EQ(entry.new_value, records[i].new_value);
    EXPECT_EQ(entry.prev, prev);
    EXPECT_EQ(entry.line, lines[i]);
    prev = LineHash(lines[i]);
  }
  EXPECT_EQ(read->entries[0].time, "2024-05-01T12:00:00.000Z");
  EXPECT_EQ(writer->entry_count(), 3u);
  EXPECT_EQ(writer->head_hash(), prev);

  absl::StatusOr<ChainVerification> verified =
      VerifyAuditChain(dir / "audit.log", KeyFromFill(1).public_key(), writer->head_hash(), 3);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->Summary();
}

TEST(WriterTest, ReopeningALogContinuesItsChain) {
  TempDir dir;
  std::string head;
  {
    auto writer = OpenOrDie(dir / "audit.log");
    ASSERT_NE(writer, nullptr);
    ASSERT_TRUE(writer->Append(ParamSet("alice", "j", "a", 1, 2)).ok());
    ASSERT_TRUE(writer->Append(ParamSet("alice", "j", "b", 1, 2)).ok());
    head = writer->head_hash();
  }
  auto writer = OpenOrDie(dir / "audit.log");
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->entry_count(), 2u);
  EXPECT_EQ(writer->head_hash(), head);
  absl::StatusOr<std::uint64_t> seq = writer->Append(ParamSet("alice", "j", "c", 1, 2));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 2u);

  absl::StatusOr<ChainVerification> verified =
      VerifyAuditChain(dir / "audit.log", KeyFromFill(1).public_key());
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->ok()) << verified->Summary();
  EXPECT_EQ(verified->entry_count, 3u);
}

TEST(WriterTest, OpeningCutsATrailingPartialLineAndContinuesAfterTheLastWholeEntry) {
  TempDir dir;
  {
    auto writer = OpenOrDie(dir / "audit.log");
    ASSERT_NE(writer, nullptr);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(writer->Append(ParamSet("a", "j", "p", i, i + 1)).ok());
  }
  const std::string whole = ReadFile(dir / "audit.log");
  const std::string fourth_line = ReadLines(dir / "audit.log")[1];
  // What a crash in the middle of write() leaves: a prefix with no "\n".
  WriteFile(dir / "audit.log", whole + fourth_line.substr(0, 57));

  auto writer = OpenOrDie(dir / "audit.log");
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(ReadFile(dir / "audit.log"), whole);
  EXPECT_EQ(writer->entry_count(), 3u);
  absl::StatusOr<std::uint64_t> seq = writer->Append(ParamSet("a", "j", "p", 3, 4));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 3u);

  absl::StatusOr<ChainVerification> verified =
      VerifyAuditChain(dir / "audit.log", KeyFromFill(1).public_key());
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->ok()) << verified->Summary();
  EXPECT_FALSE(verified->trailing_partial_line);
  EXPECT_EQ(verified->entry_count, 4u);
}

TEST(WriterTest, ATamperedLogIsRefusedAndLeftUntouched) {
  TempDir dir;
  testing::WriteSampleLog(dir / "audit.log");
  std::vector<std::string> lines = ReadLines(dir / "audit.log");
  lines[1].replace(lines[1].find("alice"), 5, "mallo");
  WriteLines(dir / "audit.log", lines);
  const std::string tampered = ReadFile(dir / "audit.log");

  absl::StatusOr<std::unique_ptr<Writer>> writer =
      Writer::Open(dir / "audit.log", KeyFromFill(1), SteppingClock());
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(writer.status().message().find("line 2 (seq 1): signature invalid"), std::string::npos)
      << writer.status();
  EXPECT_EQ(ReadFile(dir / "audit.log"), tampered);
}

TEST(WriterTest, ALogSignedWithAnotherKeyIsRefused) {
  TempDir dir;
  testing::WriteSampleLog(dir / "audit.log", /*key_fill=*/1);
  absl::StatusOr<std::unique_ptr<Writer>> writer =
      Writer::Open(dir / "audit.log", KeyFromFill(2), SteppingClock());
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(writer.status().message().find("line 1 (seq 0): signature invalid"), std::string::npos)
      << writer.status();
}

TEST(WriterTest, OpeningInAMissingDirectoryIsNotFound) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<Writer>> writer =
      Writer::Open(dir / "no-such-dir" / "audit.log", KeyFromFill(1));
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(writer.status().message().find("no-such-dir/audit.log"), std::string::npos)
      << writer.status();
}

TEST(WriterTest, ASecondWriterOnTheSameFileIsRefused) {
  TempDir dir;
  auto first = OpenOrDie(dir / "audit.log");
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<Writer>> second =
      Writer::Open(dir / "audit.log", KeyFromFill(1), SteppingClock());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  first.reset();
  EXPECT_TRUE(Writer::Open(dir / "audit.log", KeyFromFill(1), SteppingClock()).ok());
}

TEST(WriterTest, ConcurrentAppendsFormOneValidChainWithDistinctSeqs) {
  TempDir dir;
  WriterOptions options;  // the real clock: several threads call it
  auto writer = OpenOrDie(dir / "audit.log", 1, options);
  ASSERT_NE(writer, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  std::vector<std::vector<std::uint64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<std::uint64_t> seq =
            writer->Append(ParamSet("site-" + std::to_string(t), "j", "p", i, i + 1));
        if (seq.ok()) seqs[t].push_back(*seq);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  std::set<std::uint64_t> all;
  for (const auto& list : seqs) {
    EXPECT_EQ(list.size(), static_cast<std::size_t>(kPerThread));
    EXPECT_TRUE(std::is_sorted(list.begin(), list.end()));
    all.insert(list.begin(), list.end());
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(*all.rbegin(), static_cast<std::uint64_t>(kThreads * kPerThread - 1));

  absl::StatusOr<ChainVerification> verified = VerifyAuditChain(
      dir / "audit.log", KeyFromFill(1).public_key(), writer->head_hash(), kThreads * kPerThread);
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->ok()) << verified->Summary();
}

TEST(WriterTest, AnInvalidRecordIsRefusedAndTheLogStaysUsable) {
  TempDir dir;
  auto writer = OpenOrDie(dir / "audit.log");
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->Append(ParamSet("alice", "j", "p", 1, 2)).ok());
  const std::string before = ReadFile(dir / "audit.log");

  EXPECT_EQ(writer->Append(ParamSet("", "j", "p", 1, 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::uint64_t> huge =
      writer->Append(ParamSet("alice", "j", "p", 1, std::string(kMaxEntryLineBytes, 'x')));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("expected at most"), std::string::npos) << huge.status();
  EXPECT_EQ(ReadFile(dir / "audit.log"), before);
  EXPECT_EQ(writer->entry_count(), 1u);

  absl::StatusOr<std::uint64_t> seq = writer->Append(ParamSet("alice", "j", "p", 2, 3));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 1u);
}

TEST(WriterTest, EveryLineEndsWithItsSignatureAndANewline) {
  TempDir dir;
  testing::WriteSampleLog(dir / "audit.log");
  const std::string text = ReadFile(dir / "audit.log");
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  for (const std::string& line : ReadLines(dir / "audit.log")) {
    ASSERT_GT(line.size(), 138u);
    EXPECT_EQ(line.substr(line.size() - 138, 8), ",\"sig\":\"");
    EXPECT_EQ(line.substr(line.size() - 2), "\"}");
  }
}

}  // namespace
}  // namespace cohort::audit
