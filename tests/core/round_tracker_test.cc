#include "core/round_tracker.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort::core {
namespace {

using ::testing::HasSubstr;
using Decision = RoundTracker::Decision;
using std::chrono::seconds;

std::vector<std::string> Pool(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back("site-" + std::to_string(1000 + i));
  return out;
}

TEST(SelectClientsTest, ReturnsTheRequestedCountOfDistinctSortedCandidates) {
  const std::vector<std::string> pool = Pool(100);
  const std::vector<std::string> picked = SelectClients(pool, 10, 42, 1, 0);
  ASSERT_EQ(picked.size(), 10u);
  EXPECT_TRUE(std::is_sorted(picked.begin(), picked.end()));
  EXPECT_EQ(std::set<std::string>(picked.begin(), picked.end()).size(), 10u) << "a client was picked twice";
  for (const std::string& c : picked) EXPECT_NE(std::find(pool.begin(), pool.end(), c), pool.end()) << c;
}

TEST(SelectClientsTest, IsReproducibleForTheSameSeedRoundAndAttempt) {
  const std::vector<std::string> pool = Pool(100);
  EXPECT_EQ(SelectClients(pool, 10, 42, 3, 1), SelectClients(pool, 10, 42, 3, 1));
  // The order the candidates arrive in does not matter.
  std::vector<std::string> reversed(pool.rbegin(), pool.rend());
  EXPECT_EQ(SelectClients(reversed, 10, 42, 3, 1), SelectClients(pool, 10, 42, 3, 1));
}

TEST(SelectClientsTest, DiffersAcrossRoundsAttemptsAndSeedsForALargePool) {
  const std::vector<std::string> pool = Pool(100);
  const std::vector<std::string> base = SelectClients(pool, 10, 42, 1, 0);
  EXPECT_NE(SelectClients(pool, 10, 42, 2, 0), base) << "round 2 picked the same clients as round 1";
  EXPECT_NE(SelectClients(pool, 10, 42, 1, 1), base) << "a retry picked the same clients";
  EXPECT_NE(SelectClients(pool, 10, 43, 1, 0), base) << "another seed picked the same clients";
  // Over many rounds every client gets picked sometimes: the choice is not stuck on a subset.
  std::set<std::string> ever;
  for (uint64_t round = 1; round <= 100; ++round) {
    for (const std::string& c : SelectClients(pool, 10, 42, round, 0)) ever.insert(c);
  }
  EXPECT_EQ(ever.size(), pool.size());
}

TEST(SelectClientsTest, PicksEachClientAboutEquallyOften) {
  // 2,000 rounds of 10 of 20: each client is expected 1,000 times (sd ~ 21).
  const std::vector<std::string> pool = Pool(20);
  std::map<std::string, int> times;
  for (uint64_t round = 1; round <= 2000; ++round) {
    for (const std::string& c : SelectClients(pool, 10, 7, round, 0)) ++times[c];
  }
  ASSERT_EQ(times.size(), 20u);
  for (const auto& [client, n] : times) {
    EXPECT_GT(n, 850) << client;
    EXPECT_LT(n, 1150) << client;
  }
}

TEST(SelectClientsTest, ReturnsEveryoneSortedWhenThereAreNoMoreThanRequested) {
  const std::vector<std::string> few = {"c", "a", "b"};
  EXPECT_EQ(SelectClients(few, 3, 1, 1, 0), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(SelectClients(few, 10, 1, 1, 0), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(SelectClients({}, 2, 1, 1, 0).empty());
}

class RoundTrackerTest : public ::testing::Test {
 protected:
  const Clock::time_point t0_ = Clock::time_point{} + seconds(1000);
  RoundTracker tracker_{/*min_clients=*/2, seconds(60)};

  void OpenRound(uint64_t round = 5) { tracker_.Open(round, {"a", "b", "c"}, t0_); }
};

TEST_F(RoundTrackerTest, WaitsWhileNotOpen) {
  EXPECT_FALSE(tracker_.open());
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(1000)), Decision::kWait);
}

TEST_F(RoundTrackerTest, OpenRecordsTheRoundSelectionAndDeadline) {
  OpenRound(5);
  EXPECT_TRUE(tracker_.open());
  EXPECT_EQ(tracker_.round(), 5u);
  EXPECT_EQ(tracker_.selected(), (std::set<std::string>{"a", "b", "c"}));
  EXPECT_EQ(tracker_.deadline(), t0_ + seconds(60));
  EXPECT_TRUE(tracker_.IsSelected("b"));
  EXPECT_FALSE(tracker_.IsSelected("d"));
}

TEST_F(RoundTrackerTest, WaitsBeforeTheDeadlineWhileClientsAreOutstanding) {
  OpenRound();
  EXPECT_EQ(tracker_.Decide(t0_), Decision::kWait);
  tracker_.MarkReported("a");
  tracker_.MarkReported("b");
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(59)), Decision::kWait) << "c may still report before the deadline";
  EXPECT_THAT(tracker_.Explain(t0_ + seconds(59)), HasSubstr("waiting: 2 of 3 selected clients reported"));
}

TEST_F(RoundTrackerTest, ClosesAsSoonAsAllSelectedClientsReported) {
  OpenRound();
  for (const char* c : {"a", "b", "c"}) tracker_.MarkReported(c);
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(1)), Decision::kClose);
  EXPECT_THAT(tracker_.Explain(t0_ + seconds(1)), HasSubstr("all reported: 3 of 3"));
}

TEST_F(RoundTrackerTest, ClosesAtTheDeadlineWithTheMinimumReported) {
  OpenRound();
  tracker_.MarkReported("a");
  tracker_.MarkReported("c");
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(60)), Decision::kClose);
  EXPECT_THAT(tracker_.Explain(t0_ + seconds(60)), HasSubstr("deadline reached: 2 of 3"));
}

TEST_F(RoundTrackerTest, RetriesAtTheDeadlineBelowTheMinimum) {
  OpenRound();
  tracker_.MarkReported("a");
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(59)), Decision::kWait);
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(60)), Decision::kRetry);
  EXPECT_THAT(tracker_.Explain(t0_ + seconds(60)), HasSubstr("minimum not met: 1 of 3 selected clients reported"));
}

TEST_F(RoundTrackerTest, RetriesEarlyWhenFailuresMakeTheMinimumUnreachable) {
  OpenRound();
  tracker_.MarkFailed("a");
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(1)), Decision::kWait) << "b and c can still make the minimum";
  tracker_.MarkFailed("b");
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(1)), Decision::kRetry) << "only c is left; the minimum is 2";
  EXPECT_THAT(tracker_.Explain(t0_ + seconds(1)), HasSubstr("2 failed, minimum 2"));
}

TEST_F(RoundTrackerTest, ClosesEarlyWhenEveryoneLeftHasReportedOrFailedAndTheMinimumIsMet) {
  OpenRound();
  tracker_.MarkReported("a");
  tracker_.MarkFailed("b");
  tracker_.MarkReported("c");
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(1)), Decision::kClose);
}

TEST_F(RoundTrackerTest, FailureOfAClientThatReportedOrWasNotSelectedIsIgnored) {
  OpenRound();
  tracker_.MarkReported("a");
  tracker_.MarkFailed("a");
  tracker_.MarkFailed("z");
  tracker_.MarkReported("y");
  EXPECT_TRUE(tracker_.failed().empty());
  EXPECT_EQ(tracker_.reported(), (std::set<std::string>{"a"}));
}

TEST_F(RoundTrackerTest, CheckMayReportAcceptsASelectedClientOfTheOpenRound) {
  OpenRound(5);
  EXPECT_TRUE(tracker_.CheckMayReport("a", 5).ok());
}

TEST_F(RoundTrackerTest, CheckMayReportRefusesWhenNoRoundIsOpen) {
  const absl::Status never_opened = tracker_.CheckMayReport("a", 1);
  EXPECT_EQ(never_opened.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(never_opened.message()), HasSubstr("the open round is none"));
  OpenRound(5);
  tracker_.CloseRound();
  const absl::Status closed = tracker_.CheckMayReport("a", 5);
  EXPECT_EQ(closed.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(closed.message()), HasSubstr("round 5 is not open"));
  EXPECT_EQ(tracker_.Decide(t0_ + seconds(1000)), Decision::kWait);
}

TEST_F(RoundTrackerTest, CheckMayReportRefusesAnotherRound) {
  OpenRound(5);
  const absl::Status s = tracker_.CheckMayReport("a", 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("round 4 is not open (the open round is 5)"));
}

TEST_F(RoundTrackerTest, CheckMayReportRefusesAnUnselectedClient) {
  OpenRound(5);
  const absl::Status s = tracker_.CheckMayReport("mallory", 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(s.message()), HasSubstr("client mallory was not selected for round 5"));
}

TEST_F(RoundTrackerTest, CheckMayReportRefusesASecondReport) {
  OpenRound(5);
  tracker_.MarkReported("b");
  const absl::Status s = tracker_.CheckMayReport("b", 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(s.message()), HasSubstr("client b already reported round 5"));
}

TEST_F(RoundTrackerTest, CheckMayReportRefusesAFailedClient) {
  OpenRound(5);
  tracker_.MarkFailed("c");
  const absl::Status s = tracker_.CheckMayReport("c", 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("client c was excluded from round 5 after a failure"));
}

TEST_F(RoundTrackerTest, OpeningTheNextRoundForgetsReportsAndFailures) {
  OpenRound(5);
  tracker_.MarkReported("a");
  tracker_.MarkFailed("b");
  tracker_.Open(6, {"a", "b"}, t0_ + seconds(100));
  EXPECT_TRUE(tracker_.reported().empty());
  EXPECT_TRUE(tracker_.failed().empty());
  EXPECT_TRUE(tracker_.CheckMayReport("a", 6).ok());
  EXPECT_TRUE(tracker_.CheckMayReport("b", 6).ok());
  EXPECT_EQ(tracker_.deadline(), t0_ + seconds(160));
}

TEST(RoundTrackerSmallRoundTest, RetriesWhenFewerClientsWereSelectedThanTheMinimumAndAllReported) {
  RoundTracker tracker(/*min_clients=*/3, seconds(60));
  const Clock::time_point t0 = Clock::time_point{} + seconds(1);
  tracker.Open(1, {"a", "b"}, t0);
  tracker.MarkReported("a");
  tracker.MarkReported("b");
  EXPECT_EQ(tracker.Decide(t0), Decision::kRetry);
}

}  // namespace
}  // namespace cohort::core
