// Refused calls aggregated (server/denial_aggregator.h) on an injected clock: the first of
// a kind is written at once and in full, repeats only counted, and the count written once
// when the window ends, when the kind comes back after it, or at FlushAll; kinds differ by
// actor, method and status code; a flood of kinds keeps memory bounded and loses no count.
#include "server/denial_aggregator.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cohort::server {
namespace {

struct Written {
  std::vector<std::string> full;  // "identity method code"
  std::vector<RepeatedDenials> repeated;
  uint64_t total() const {
    uint64_t n = full.size();
    for (const RepeatedDenials& r : repeated) n += r.count;
    return n;
  }
};

class DenialAggregatorTest : public ::testing::Test {
 protected:
  std::unique_ptr<DenialAggregator> Make(absl::Duration window = absl::Seconds(60), size_t max_keys = 1024) {
    DenialAggregator::Options options;
    options.window = window;
    options.max_keys = max_keys;
    options.now = [this] { return now_; };
    DenialAggregator::Sink sink;
    sink.full = [this](const Actor& a, const std::string& method, const absl::Status& why) {
      written_.full.push_back(a.identity + " " + method + " " + absl::StatusCodeToString(why.code()));
    };
    sink.repeated = [this](const RepeatedDenials& r) { written_.repeated.push_back(r); };
    return std::make_unique<DenialAggregator>(options, sink);
  }

  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  Written written_;
  const Actor site_{"hospital-a", "site"};
  const absl::Status denied_ = absl::PermissionDeniedError("hospital-a (role site) lacks admin.read");
};

TEST_F(DenialAggregatorTest, TheFirstRefusalIsWrittenAtOnceAndItsRepeatsOnlyCounted) {
  auto aggregator = Make();
  aggregator->Record(site_, "/cohort.v1.Admin/GetStatus", denied_);
  ASSERT_EQ(written_.full.size(), 1u);  // before the caller hears of it
  EXPECT_EQ(written_.full[0], "hospital-a /cohort.v1.Admin/GetStatus PERMISSION_DENIED");
  for (int i = 0; i < 10000; ++i) {
    now_ += absl::Milliseconds(1);
    aggregator->Record(site_, "/cohort.v1.Admin/GetStatus", denied_);
  }
  EXPECT_EQ(written_.full.size(), 1u);
  EXPECT_TRUE(written_.repeated.empty());  // the window (60 s) is still open
  aggregator->FlushAll();
  ASSERT_EQ(written_.repeated.size(), 1u);
  const RepeatedDenials& r = written_.repeated[0];
  EXPECT_EQ(r.count, 10000u);
  EXPECT_EQ(r.actor.identity, "hospital-a");
  EXPECT_EQ(r.actor.role, "site");
  EXPECT_EQ(r.method, "/cohort.v1.Admin/GetStatus");
  EXPECT_EQ(r.code, absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(r.window, absl::Seconds(60));
  EXPECT_EQ(r.first, r.window_start + absl::Milliseconds(1));
  EXPECT_EQ(r.last, r.window_start + absl::Milliseconds(10000));
  EXPECT_EQ(r.last_reason, denied_.message());
  EXPECT_EQ(aggregator->tracked_keys(), 0u);
}

TEST_F(DenialAggregatorTest, AnEndedWindowIsWrittenByTheTickAndTheNextRefusalOpensANewOne) {
  auto aggregator = Make(absl::Seconds(10));
  for (int i = 0; i < 5; ++i) aggregator->Record(site_, "m", denied_);
  now_ += absl::Seconds(9);
  aggregator->FlushExpired();
  EXPECT_TRUE(written_.repeated.empty());
  now_ += absl::Seconds(1);
  aggregator->FlushExpired();
  ASSERT_EQ(written_.repeated.size(), 1u);
  EXPECT_EQ(written_.repeated[0].count, 4u);
  aggregator->Record(site_, "m", denied_);
  EXPECT_EQ(written_.full.size(), 2u);
  aggregator->FlushAll();
  EXPECT_EQ(written_.repeated.size(), 1u);  // a window with no repeat leaves no count entry
  EXPECT_EQ(written_.total(), 6u);
}

TEST_F(DenialAggregatorTest, ARefusalAfterItsWindowEndedWritesTheOldCountBeforeItself) {
  auto aggregator = Make(absl::Seconds(10));
  for (int i = 0; i < 3; ++i) aggregator->Record(site_, "m", denied_);
  now_ += absl::Seconds(11);
  aggregator->Record(site_, "m", denied_);  // no tick ran in between
  ASSERT_EQ(written_.repeated.size(), 1u);
  EXPECT_EQ(written_.repeated[0].count, 2u);
  EXPECT_EQ(written_.full.size(), 2u);
}

TEST_F(DenialAggregatorTest, KindsDifferByActorMethodAndCode) {
  auto aggregator = Make();
  aggregator->Record(site_, "m", denied_);
  aggregator->Record(site_, "m", absl::ResourceExhaustedError("too many calls"));
  aggregator->Record(site_, "other", denied_);
  aggregator->Record({"hospital-b", "site"}, "m", denied_);
  aggregator->Record({"hospital-a", "admin"}, "m", denied_);
  EXPECT_EQ(written_.full.size(), 5u);
  // The same kind with a different message is a repeat: varying the claim does not buy entries.
  aggregator->Record(site_, "m", absl::PermissionDeniedError("the certificate of hospital-a cannot act as x"));
  EXPECT_EQ(written_.full.size(), 5u);
}

TEST_F(DenialAggregatorTest, AFloodOfKindsKeepsMemoryBoundedAndLosesNoCount) {
  auto aggregator = Make(absl::Seconds(60), /*max_keys=*/16);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i) {
      now_ += absl::Milliseconds(1);
      aggregator->Record({"site-" + std::to_string(i), "site"}, "m", denied_);
      ASSERT_LE(aggregator->tracked_keys(), 16u);
    }
  }
  aggregator->FlushAll();
  EXPECT_EQ(written_.total(), 300u);
}

TEST_F(DenialAggregatorTest, DestroyingItWritesWhatIsStillCounted) {
  {
    auto aggregator = Make();
    for (int i = 0; i < 7; ++i) aggregator->Record(site_, "m", denied_);
  }
  ASSERT_EQ(written_.repeated.size(), 1u);
  EXPECT_EQ(written_.repeated[0].count, 6u);
}

}  // namespace
}  // namespace cohort::server
