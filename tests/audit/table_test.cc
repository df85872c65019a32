#include "audit/table.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "audit/reader.h"
#include "tests/audit/test_util.h"

namespace cohort::audit {
namespace {

using testing::ParamSet;

Entry MakeEntry(std::uint64_t seq, const Record& record) {
  Entry entry;
  static_cast<Record&>(entry) = record;
  entry.seq = seq;
  entry.time = FormatEntryTime(absl::FromUnixSeconds(1714564800 + static_cast<int>(seq)));
  return entry;
}

std::vector<std::string> Rows(const std::string& table) {
  std::vector<std::string> rows;
  std::size_t start = 0;
  for (std::size_t nl; (nl = table.find('\n', start)) != std::string::npos; start = nl + 1) {
    rows.push_back(table.substr(start, nl - start));
  }
  return rows;
}

TEST(TableTest, HasAHeaderAndOneAlignedRowPerEntry) {
  const std::vector<Entry> entries = {
      MakeEntry(0, ParamSet("alice", "mnist", "rounds", 10, 20)),
      MakeEntry(1, ParamSet("maximilian", "cifar", "lr", 0.1, 0.05))};
  const std::vector<std::string> rows = Rows(FormatEntryTable(entries));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].rfind("SEQ  TIME", 0), 0u) << rows[0];
  EXPECT_EQ(rows[0].find("REASON"), std::string::npos);

  // Every column starts at the same offset in every row.
  const std::size_t role = rows[0].find("ROLE");
  EXPECT_EQ(rows[1].find("admin"), role);
  EXPECT_EQ(rows[2].find("admin"), role);
  const std::size_t change = rows[0].find("CHANGE");
  EXPECT_EQ(rows[1].substr(change), "10 -> 20");
  EXPECT_EQ(rows[2].substr(change), "0.1 -> 0.05");
  const std::size_t target = rows[0].find("TARGET");
  EXPECT_EQ(rows[1].substr(target, 23), "job=mnist parameter=rou");
}

TEST(TableTest, TheReasonColumnAppearsOnlyWhenAnEntryHasOne) {
  Record refused = ParamSet("bob", "mnist", "dp.noise_multiplier", 1.1, 0.1);
  refused.action = action::kParamSetRefused;
  refused.reason = "role site may not change it";
  const std::vector<std::string> rows = Rows(
      FormatEntryTable({MakeEntry(0, ParamSet("alice", "j", "p", 1, 2)), MakeEntry(1, refused)}));
  ASSERT_EQ(rows.size(), 3u);
  const std::size_t reason = rows[0].find("REASON");
  ASSERT_NE(reason, std::string::npos);
  EXPECT_EQ(rows[2].substr(reason), "role site may not change it");
  // An entry without a reason leaves no trailing padding.
  EXPECT_NE(rows[1].back(), ' ');
}

TEST(TableTest, AnEntryWithNoOldOrNewValueHasAnEmptyChange) {
  Record add;
  add.actor = "alice";
  add.role = "admin";
  add.action = action::kParticipantAdd;
  add.target.participant = "site-b";
  const std::vector<std::string> rows = Rows(FormatEntryTable({MakeEntry(0, add)}));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].substr(rows[0].find("TARGET")), "participant=site-b");
}

TEST(TableTest, TerminalControlCharactersFromTheLogAreEscaped) {
  Record record = ParamSet("eve\x1b[2J", "j", "p", 1,
                           "\xe2\x80\xae"
                           "txt.exe");
  const std::string table = FormatEntryTable({MakeEntry(0, record)});
  EXPECT_EQ(table.find('\x1b'), std::string::npos);
  EXPECT_EQ(table.find("\xe2\x80\xae"), std::string::npos);
  EXPECT_NE(table.find("eve\\u001b[2J"), std::string::npos) << table;
  EXPECT_NE(table.find("\\u202etxt.exe"), std::string::npos) << table;
  EXPECT_EQ(EscapeForTerminal("ok\xff"), "ok\\xff");
  EXPECT_EQ(EscapeForTerminal("caf\xc3\xa9\t"), "caf\xc3\xa9\\u0009");
}

TEST(TableTest, LongCellsAreCutAndNonAsciiTextStaysAligned) {
  const std::vector<Entry> entries = {
      MakeEntry(0, ParamSet("zoë", "j", "p", 1, std::string(200, 'v'))),
      MakeEntry(1, ParamSet("bob", "j", "p", 1, 2))};
  const std::vector<std::string> rows = Rows(FormatEntryTable(entries));
  ASSERT_EQ(rows.size(), 3u);
  const std::size_t change = rows[0].find("CHANGE");
  EXPECT_EQ(rows[1].size() - change, kMaxTableCellChars + 1);  // "ë" is two bytes, one char
  EXPECT_EQ(rows[1].substr(rows[1].size() - 3), "...");
  // "zoë" and "bob" are both three characters wide: ROLE lines up byte-wise
  // only after allowing for the extra byte of "ë".
  EXPECT_EQ(rows[1].find("admin"), rows[0].find("ROLE") + 1);
  EXPECT_EQ(rows[2].find("admin"), rows[0].find("ROLE"));
}

}  // namespace
}  // namespace cohort::audit
