#include "privacy/ledger_format.h"

#include <gtest/gtest.h>

#include <string>

namespace cohort::privacy::ledger_format {
namespace {

SpendEntry SampleSpend() {
  SpendEntry entry;
  entry.seq = 3;
  entry.time = "2024-05-01T12:00:00.123Z";
  entry.request.job = "mnist-dp";
  entry.request.round = 12;
  entry.request.mechanism = Mechanism::kClientDp;
  entry.request.sampling_rate = 256.0 / 60000;  // not exact in decimal
  entry.request.noise_multiplier = 1.1;
  entry.request.steps = 14063;
  entry.request.clip_norm = 0.7;
  entry.epsilon_after = 2.5966555286883683;
  entry.delta = 1e-5;
  entry.prev = std::string(64, 'a');
  return entry;
}

std::string MessageOf(const absl::Status& status) {
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  return std::string(status.message());
}

TEST(LedgerFormatTest, HashesLinesWithSha256) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(HashLine("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ZeroHash(), std::string(64, '0'));
}

TEST(LedgerFormatTest, SpendLinesRoundTripExactly) {
  const SpendEntry entry = SampleSpend();
  const std::string line = EncodeSpend(entry);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("{\"kind\":\"spend\",\"seq\":3,", 0), 0u) << line;
  auto parsed = ParseSpend(line);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->seq, 3);
  EXPECT_EQ(parsed->time, entry.time);
  EXPECT_EQ(parsed->request.job, "mnist-dp");
  EXPECT_EQ(parsed->request.round, 12);
  EXPECT_EQ(parsed->request.mechanism, Mechanism::kClientDp);
  EXPECT_EQ(parsed->request.sampling_rate, entry.request.sampling_rate);
  EXPECT_EQ(parsed->request.noise_multiplier, 1.1);
  EXPECT_EQ(parsed->request.steps, 14063);
  EXPECT_EQ(parsed->request.clip_norm, 0.7);
  EXPECT_EQ(parsed->epsilon_after, entry.epsilon_after);
  EXPECT_EQ(parsed->delta, 1e-5);
  EXPECT_EQ(parsed->prev, entry.prev);
  EXPECT_EQ(EncodeSpend(*parsed), line);
}

TEST(LedgerFormatTest, HeaderLinesRoundTrip) {
  const Header header{"hospital-a", {8.0, 1e-5}, "2024-05-01T12:00:00.000Z",
                      ZeroHash()};
  const std::string line = EncodeHeader(header);
  EXPECT_NE(line.find("\"accountant\":\"rdp-poisson-gaussian/v1\""),
            std::string::npos);
  auto parsed = ParseHeader(line);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->site, "hospital-a");
  EXPECT_EQ(parsed->budget.epsilon, 8.0);
  EXPECT_EQ(parsed->budget.delta, 1e-5);
  EXPECT_EQ(parsed->prev, ZeroHash());
}

TEST(LedgerFormatTest, ReportsWhatIsWrongWithAMalformedLine) {
  EXPECT_EQ(MessageOf(ParseSpend("[1,2]").status()),
            "not a JSON object (corrupt or edited)");
  EXPECT_EQ(MessageOf(ParseHeader(EncodeSpend(SampleSpend())).status()),
            "expected kind \"header\", found \"spend\"");

  std::string line = EncodeSpend(SampleSpend());
  std::string missing = line;
  missing.replace(missing.find("\"job\":\"mnist-dp\","), 17, "");
  EXPECT_EQ(MessageOf(ParseSpend(missing).status()), "missing field \"job\"");

  std::string mistyped = line;
  mistyped.replace(mistyped.find("\"steps\":14063"), 13, "\"steps\":\"many\"");
  EXPECT_EQ(MessageOf(ParseSpend(mistyped).status()),
            "field \"steps\" has the wrong type (string)");

  std::string mechanism = line;
  mechanism.replace(mechanism.find("client-dp"), 9, "laplace");
  EXPECT_EQ(MessageOf(ParseSpend(mechanism).status()),
            "unknown mechanism \"laplace\" (expected \"dp-sgd\" or "
            "\"client-dp\")");

  std::string bad_value = line;
  bad_value.replace(bad_value.find("\"sigma\":1.1"), 11, "\"sigma\":-1.0");
  EXPECT_EQ(MessageOf(ParseSpend(bad_value).status()),
            "noise_multiplier: expected a number > 0, got -1");

  std::string header = EncodeHeader({"s", {1.0, 1e-5}, "t", ZeroHash()});
  header.replace(header.find("\"version\":1"), 11, "\"version\":9");
  EXPECT_EQ(MessageOf(ParseHeader(header).status()),
            "unsupported format version 9 (this build reads 1)");
}

TEST(LedgerFormatTest, ValidatesSpendRequestsNamingTheField) {
  SpendRequest request = SampleSpend().request;
  EXPECT_TRUE(ValidateSpendRequest(request).ok());
  request.round = -1;
  EXPECT_EQ(std::string(ValidateSpendRequest(request).message()),
            "round: expected an integer >= 0, got -1");
  request.round = 0;
  request.sampling_rate = 2;
  EXPECT_EQ(std::string(ValidateSpendRequest(request).message()),
            "sampling_rate: expected a number in (0, 1], got 2");
  request.sampling_rate = 0.1;
  request.job = std::string("bad \xff utf-8");
  EXPECT_EQ(std::string(ValidateSpendRequest(request).message()),
            "job: expected UTF-8 text");
}

TEST(LedgerFormatTest, TimestampsAreRfc3339Utc) {
  const std::string now = NowRfc3339();
  ASSERT_EQ(now.size(), 24u) << now;
  EXPECT_EQ(now[4], '-');
  EXPECT_EQ(now[10], 'T');
  EXPECT_EQ(now[19], '.');
  EXPECT_EQ(now.back(), 'Z');
}

}  // namespace
}  // namespace cohort::privacy::ledger_format
