#include "audit/entry.h"

#include <gtest/gtest.h>

#include <string>

#include "storage/sha256.h"
#include "tests/audit/test_util.h"

namespace cohort::audit {
namespace {

using testing::KeyFromFill;
using testing::ParamSet;

TEST(EntryTest, UnsignedEntryHasTheDocumentedMembersInOrderWithoutWhitespace) {
  absl::StatusOr<std::string> body = EncodeUnsignedEntry(
      3, "2024-05-01T12:00:00.123Z", ParamSet("alice", "mnist", "rounds", 10, 20), kZeroHash);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body,
            "{\"seq\":3,\"time\":\"2024-05-01T12:00:00.123Z\",\"actor\":\"alice\",\"role\":"
            "\"admin\",\"action\":\"param.set\",\"target\":{\"job\":\"mnist\",\"parameter\":"
            "\"rounds\"},\"old\":10,\"new\":20,\"reason\":null,\"prev\":\"" +
                std::string(kZeroHash) + "\"}");
}

TEST(EntryTest, EmptyTargetMembersAreLeftOutAndAReasonIsAString) {
  Record record;
  record.actor = "server";
  record.role = "server";
  record.action = action::kParticipantRevoke;
  record.target.participant = "site-b";
  record.reason = "certificate \"revoked\"";
  absl::StatusOr<std::string> body =
      EncodeUnsignedEntry(0, "2024-05-01T12:00:00.000Z", record, kZeroHash);
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_NE(body->find("\"target\":{\"participant\":\"site-b\"}"), std::string::npos) << *body;
  EXPECT_NE(body->find("\"old\":null,\"new\":null,\"reason\":\"certificate \\\"revoked\\\"\""),
            std::string::npos)
      << *body;
}

TEST(EntryTest, SignatureIsTheLastMemberAndSplitsBackToTheSignedObject) {
  const crypto::SigningKey key = KeyFromFill(7);
  const std::string body =
      *EncodeUnsignedEntry(0, "2024-05-01T12:00:00.000Z", ParamSet("a", "j", "p", 1, 2), kZeroHash);
  const crypto::Signature signature = key.Sign(std::string(kEntrySignatureContext) + body);
  const std::string line = AttachSignature(body, signature);

  EXPECT_EQ(line.substr(0, body.size() - 1), body.substr(0, body.size() - 1));
  EXPECT_EQ(line.substr(body.size() - 1),
            ",\"sig\":\"" + crypto::SignatureToHex(signature) + "\"}");
  absl::StatusOr<SignedParts> parts = SplitSignature(line);
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->unsigned_object, body);
  EXPECT_EQ(parts->signature, signature);
}

TEST(EntryTest, SplitSignatureRejectsObjectsNotEndingInASigMember) {
  const std::string sig(128, 'a');
  EXPECT_FALSE(SplitSignature("{\"seq\":0}").ok());
  EXPECT_FALSE(SplitSignature("{\"seq\":0,\"sig\":\"" + sig + "\",\"x\":1}").ok());
  EXPECT_FALSE(SplitSignature("{\"seq\":0, \"sig\":\"" + sig + "\"}").ok());
  EXPECT_FALSE(SplitSignature("{\"seq\":0,\"sig\":\"" + std::string(128, 'A') + "\"}").ok());
  EXPECT_TRUE(SplitSignature("{\"seq\":0,\"sig\":\"" + sig + "\"}").ok());
}

TEST(EntryTest, TimesAreRfc3339UtcWithExactlyMilliseconds) {
  EXPECT_EQ(FormatEntryTime(absl::FromUnixMillis(1714564800123)), "2024-05-01T12:00:00.123Z");
  EXPECT_EQ(FormatEntryTime(absl::FromUnixMillis(1714564800000)), "2024-05-01T12:00:00.000Z");
  absl::StatusOr<absl::Time> parsed = ParseEntryTime("2024-05-01T12:00:00.123Z");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, absl::FromUnixMillis(1714564800123));

  for (const char* other : {"2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123+00:00",
                            "2024-05-01T12:00:00.1234Z", "2024-05-01 12:00:00.123Z", ""}) {
    EXPECT_FALSE(ParseEntryTime(other).ok()) << other;
  }
}

TEST(EntryTest, ActionNamesAreDottedLowercaseWords) {
  for (const char* good : {"job.create", "param.set.refused", "privacy.spend", "x", "a1.b_2"}) {
    EXPECT_TRUE(IsValidActionName(good)) << good;
  }
  for (const char* bad : {"", "Job.create", "job.", ".job", "job..create", "job create", "1job"}) {
    EXPECT_FALSE(IsValidActionName(bad)) << bad;
  }
}

TEST(EntryTest, RecordsBreakingTheFormatAreRefusedWithTheReason) {
  Record no_actor = ParamSet("", "j", "p", 1, 2);
  absl::StatusOr<std::string> body =
      EncodeUnsignedEntry(0, "2024-05-01T12:00:00.000Z", no_actor, kZeroHash);
  EXPECT_EQ(body.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(body.status().message().find("actor"), std::string::npos) << body.status();

  Record bad_action = ParamSet("alice", "j", "p", 1, 2);
  bad_action.action = "Param Set";
  body = EncodeUnsignedEntry(0, "2024-05-01T12:00:00.000Z", bad_action, kZeroHash);
  EXPECT_NE(body.status().message().find("\"Param Set\""), std::string::npos) << body.status();

  Record not_utf8 = ParamSet("alice\xff", "j", "p", 1, 2);
  body = EncodeUnsignedEntry(0, "2024-05-01T12:00:00.000Z", not_utf8, kZeroHash);
  EXPECT_NE(body.status().message().find("UTF-8"), std::string::npos) << body.status();

  Record bad_value = ParamSet("alice", "j", "p", 1, std::string("\xc3"));
  body = EncodeUnsignedEntry(0, "2024-05-01T12:00:00.000Z", bad_value, kZeroHash);
  EXPECT_NE(body.status().message().find("new"), std::string::npos) << body.status();
}

TEST(EntryTest, LineHashIsSha256OfTheLineWithItsNewline) {
  // sha256("abc\n"), as `printf 'abc\n' | sha256sum` prints it.
  EXPECT_EQ(LineHash("abc"), "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb");
  EXPECT_EQ(LineHash("abc"), storage::Sha256Hex("abc\n"));
}

TEST(EntryTest, ParsedLineGivesBackEveryMember) {
  const crypto::SigningKey key = KeyFromFill(7);
  Record record = ParamSet("alice", "mnist", "dp.clip", nullptr, {{"l2", 1.5}});
  record.reason = "tighter clipping";
  const std::string prev = LineHash("previous line");
  const std::string body = *EncodeUnsignedEntry(42, "2024-05-01T12:00:00.250Z", record, prev);
  const std::string line =
      AttachSignature(body, key.Sign(std::string(kEntrySignatureContext) + body));

  absl::StatusOr<Entry> entry = ParseEntryLine(line);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->seq, 42u);
  EXPECT_EQ(entry->time, "2024-05-01T12:00:00.250Z");
  EXPECT_EQ(entry->timestamp, absl::FromUnixMillis(1714564800250));
  EXPECT_EQ(entry->actor, "alice");
  EXPECT_EQ(entry->role, "admin");
  EXPECT_EQ(entry->action, "param.set");
  EXPECT_EQ(entry->target, (Target{"mnist", "dp.clip", ""}));
  EXPECT_TRUE(entry->old_value.is_null());
  EXPECT_EQ(entry->new_value, nlohmann::json({{"l2", 1.5}}));
  EXPECT_EQ(entry->reason, "tighter clipping");
  EXPECT_EQ(entry->prev, prev);
  EXPECT_EQ(entry->line, line);
}

TEST(EntryTest, ParsingNamesTheMissingOrMistypedMember) {
  absl::StatusOr<Entry> entry = ParseEntryLine("{\"seq\":0}");
  EXPECT_NE(entry.status().message().find("\"time\" is missing"), std::string::npos)
      << entry.status();
  entry = ParseEntryLine("{\"seq\":-1}");
  EXPECT_NE(entry.status().message().find("\"seq\": expected an unsigned integer, got -1"),
            std::string::npos)
      << entry.status();
  EXPECT_EQ(ParseEntryLine("{\"seq\":").status().message(), "not valid JSON");
}

}  // namespace
}  // namespace cohort::audit
