#include "server/job_summary.h"

#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace cohort::server {
namespace {

// A round's entry as the server records it: every site's metrics, numbers of every kind.
nlohmann::json Entry(uint64_t round) {
  return {{"round", round},
          {"model_version", round},
          {"train_loss", 1.0 / static_cast<double>(round)},
          {"clients", {{{"site", "site-0"}, {"samples", 270}, {"eval_accuracy", 0.1 * static_cast<double>(round)}},
                       {{"site", "site-1"}, {"samples", 30}, {"steps", -1}}}},
          {"phase_seconds", {{"fold", 0.25}}},
          {"parameter_changes", nlohmann::json::array()}};
}

// The summary as the server kept it before: one tree.
nlohmann::json TreeOfRounds(uint64_t rounds) {
  nlohmann::json tree = {{"job", "soak"}, {"status", "running"}, {"rounds", nlohmann::json::array()}};
  for (uint64_t r = 1; r <= rounds; ++r) tree["rounds"].push_back(Entry(r));
  return tree;
}

TEST(JobSummaryTest, ANewJobStartsRunningWithNoRounds) {
  const JobSummary summary("soak", nullptr);
  EXPECT_EQ(summary.Take().Text(), R"({"job":"soak","rounds":[],"status":"running"})");
  EXPECT_EQ(summary.Tree(), nlohmann::json::parse(R"({"job":"soak","rounds":[],"status":"running"})"));
  EXPECT_TRUE(summary.LastRound().is_null());
}

TEST(JobSummaryTest, TextIsTheCompactJsonOfTheTreeWithMembersOnBothSidesOfRounds) {
  JobSummary summary("soak", nullptr);
  nlohmann::json expected = TreeOfRounds(0);
  for (uint64_t r = 1; r <= 30; ++r) {
    summary.AppendRound(Entry(r));
    expected["rounds"].push_back(Entry(r));
  }
  // "ended_early" and "failure" sort before "rounds", "status" after it.
  summary.SetMember("ended_early", "after round 30: 1 site can still train, 2 needed");
  summary.SetMember("failure", "a \"quoted\" reason\nover two lines");
  summary.SetMember("status", "failed");
  expected["ended_early"] = "after round 30: 1 site can still train, 2 needed";
  expected["failure"] = "a \"quoted\" reason\nover two lines";
  expected["status"] = "failed";
  EXPECT_EQ(summary.Take().Text(), expected.dump());
  EXPECT_EQ(summary.Tree(), expected);
  EXPECT_EQ(summary.round_count(), 30u);
}

TEST(JobSummaryTest, AResumedSummaryKeepsItsRoundsAndMembers) {
  nlohmann::json resumed = TreeOfRounds(12);
  resumed["ended_early"] = "no";
  const JobSummary summary("ignored for a resumed job", resumed);
  EXPECT_EQ(summary.Take().Text(), resumed.dump());
  EXPECT_EQ(summary.Tree(), resumed);
  EXPECT_EQ(summary.LastRound(), Entry(12));
}

TEST(JobSummaryTest, ANanIsNullAsInTheTreesDump) {
  JobSummary summary("soak", nullptr);
  nlohmann::json entry = Entry(1);
  entry["train_loss"] = std::numeric_limits<double>::quiet_NaN();  // a diverged round
  summary.AppendRound(entry);
  nlohmann::json expected = TreeOfRounds(0);
  expected["rounds"].push_back(entry);
  EXPECT_EQ(summary.Take().Text(), expected.dump());
  EXPECT_TRUE(summary.LastRound()["train_loss"].is_null());
}

TEST(JobSummaryTest, UpdatesChangeTheirRoundOnly) {
  JobSummary summary("soak", nullptr);
  for (uint64_t r = 1; r <= 5; ++r) summary.AppendRound(Entry(r));
  EXPECT_TRUE(summary.UpdateLastRound([](nlohmann::json& e) { e["phase_seconds"]["checkpoint"] = 0.5; }));
  EXPECT_TRUE(summary.UpdateRound(3, [](nlohmann::json& e) { e["clients"] = nlohmann::json::array(); }));
  EXPECT_FALSE(summary.UpdateRound(9, [](nlohmann::json& e) { e["round"] = 0; }));
  nlohmann::json expected = TreeOfRounds(5);
  expected["rounds"][4]["phase_seconds"]["checkpoint"] = 0.5;
  expected["rounds"][2]["clients"] = nlohmann::json::array();
  EXPECT_EQ(summary.Tree(), expected);
  EXPECT_EQ(summary.Take().Text(), expected.dump());

  JobSummary empty("soak", nullptr);
  EXPECT_FALSE(empty.UpdateLastRound([](nlohmann::json& e) { e["round"] = 0; }));
}

TEST(JobSummaryTest, SnapshotsShareTheRoundsTextsAndKeepTheirOwnAfterAChange) {
  JobSummary summary("soak", nullptr);
  for (uint64_t r = 1; r <= 3; ++r) summary.AppendRound(Entry(r));
  const JobSummary::Snapshot before = summary.Take();
  const std::string before_text = before.Text();
  summary.UpdateLastRound([](nlohmann::json& e) { e["phase_seconds"]["checkpoint"] = 0.5; });
  summary.AppendRound(Entry(4));
  const JobSummary::Snapshot after = summary.Take();
  // A status call copies no round's text: the rounds that did not change are the same
  // strings in both snapshots.
  ASSERT_EQ(after.rounds.size(), 4u);
  EXPECT_EQ(after.rounds[0].get(), before.rounds[0].get());
  EXPECT_EQ(after.rounds[1].get(), before.rounds[1].get());
  EXPECT_NE(after.rounds[2].get(), before.rounds[2].get());
  // The earlier snapshot still reads as the summary was when it was taken.
  EXPECT_EQ(before.Text(), before_text);
  EXPECT_EQ(nlohmann::json::parse(before_text), TreeOfRounds(3));
  EXPECT_EQ(after.Text(), summary.Tree().dump());
}

TEST(JobSummaryTest, PartsJoinToTheText) {
  JobSummary summary("soak", nullptr);
  for (uint64_t r = 1; r <= 4; ++r) summary.AppendRound(Entry(r));
  const JobSummary::Snapshot snapshot = summary.Take();
  std::string joined;
  for (std::string_view part : snapshot.Parts()) joined += part;
  EXPECT_EQ(joined, snapshot.Text());
}

}  // namespace
}  // namespace cohort::server
