#include "training/partition.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort::training {
namespace {

using ::testing::HasSubstr;

// 10 classes of 600 examples each, interleaved the way a real data set is (not sorted).
std::vector<int64_t> BalancedLabels(size_t per_class = 600, int64_t classes = 10) {
  std::vector<int64_t> labels;
  for (size_t i = 0; i < per_class * static_cast<size_t>(classes); ++i) {
    labels.push_back(static_cast<int64_t>((i * 7) % static_cast<size_t>(classes)));
  }
  return labels;
}

// Every index in [0, n) appears in exactly one shard.
void ExpectDisjointAndCovering(const Shards& shards, size_t n) {
  std::vector<int> seen(n, 0);
  for (const auto& shard : shards) {
    for (size_t i : shard) {
      ASSERT_LT(i, n);
      ++seen[i];
    }
  }
  size_t missing = 0, repeated = 0;
  for (int s : seen) {
    missing += s == 0;
    repeated += s > 1;
  }
  EXPECT_EQ(missing, 0u) << "examples given to no client";
  EXPECT_EQ(repeated, 0u) << "examples given to more than one client";
}

// The share of a client's data taken by its most common class.
double LargestClassShare(const std::vector<size_t>& shard, const std::vector<int64_t>& labels, int64_t classes) {
  std::vector<size_t> counts(static_cast<size_t>(classes), 0);
  for (size_t i : shard) ++counts[static_cast<size_t>(labels[i])];
  return static_cast<double>(*std::max_element(counts.begin(), counts.end())) / static_cast<double>(shard.size());
}

TEST(PartitionIidTest, ShardsAreDisjointCoverEverythingAndDifferInSizeByAtMostOne) {
  for (auto [n, clients] : {std::pair{size_t{6000}, 10}, std::pair{size_t{1001}, 7}, std::pair{size_t{5}, 5},
                            std::pair{size_t{3}, 4}}) {
    SCOPED_TRACE(::testing::Message() << n << " examples, " << clients << " clients");
    const Shards shards = PartitionIid(n, clients, 42);
    ASSERT_EQ(shards.size(), static_cast<size_t>(clients));
    ExpectDisjointAndCovering(shards, n);
    const auto [smallest, largest] = std::minmax_element(
        shards.begin(), shards.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); });
    EXPECT_LE(largest->size() - smallest->size(), 1u);
  }
}

TEST(PartitionIidTest, TheSameSeedGivesTheSameShardsAndAnotherSeedOthers) {
  EXPECT_EQ(PartitionIid(1000, 4, 7), PartitionIid(1000, 4, 7));
  EXPECT_NE(PartitionIid(1000, 4, 7), PartitionIid(1000, 4, 8));
}

TEST(PartitionIidTest, ShardsAreShuffledNotContiguousRanges) {
  const Shards shards = PartitionIid(1000, 2, 1);
  std::vector<size_t> first = shards[0];
  std::sort(first.begin(), first.end());
  EXPECT_GT(first.back() - first.front(), 600u) << "client 0 got a contiguous block";
}

TEST(PartitionDirichletTest, ShardsAreDisjointCoverEverythingAndMeetTheMinimumSize) {
  const std::vector<int64_t> labels = BalancedLabels();
  absl::StatusOr<Shards> shards = PartitionDirichlet(labels, 10, 10, 0.5, 42, /*min_size=*/50);
  ASSERT_TRUE(shards.ok()) << shards.status();
  ASSERT_EQ(shards->size(), 10u);
  ExpectDisjointAndCovering(*shards, labels.size());
  for (const auto& s : *shards) EXPECT_GE(s.size(), 50u);
}

TEST(PartitionDirichletTest, SmallAlphaSkewsEachClientsLabels) {
  // Under IID each client's largest class is ~10-13% of its data; Dirichlet(0.5) over 10
  // clients concentrates most clients on a few classes.
  const std::vector<int64_t> labels = BalancedLabels();
  absl::StatusOr<Shards> shards = Partition("dirichlet:0.5", labels, 10, 10, 42);
  ASSERT_TRUE(shards.ok()) << shards.status();
  ExpectDisjointAndCovering(*shards, labels.size());
  double mean_share = 0, max_share = 0;
  for (const auto& s : *shards) {
    EXPECT_GE(s.size(), 10u) << "Partition() asks for at least 10 examples per client";
    const double share = LargestClassShare(s, labels, 10);
    mean_share += share / 10;
    max_share = std::max(max_share, share);
  }
  EXPECT_GT(mean_share, 0.3) << "labels are not skewed";
  EXPECT_GT(max_share, 0.5) << "no client is dominated by one class";

  const Shards iid = PartitionIid(labels.size(), 10, 42);
  double iid_max_share = 0;
  for (const auto& s : iid) iid_max_share = std::max(iid_max_share, LargestClassShare(s, labels, 10));
  EXPECT_LT(iid_max_share, 0.16) << "the statistic does not separate IID from skewed shards";
}

TEST(PartitionDirichletTest, LargeAlphaIsCloseToUniformPerClient) {
  const std::vector<int64_t> labels = BalancedLabels();
  absl::StatusOr<Shards> shards = Partition("dirichlet:100", labels, 10, 10, 42);
  ASSERT_TRUE(shards.ok()) << shards.status();
  ExpectDisjointAndCovering(*shards, labels.size());
  for (const auto& s : *shards) {
    std::vector<size_t> counts(10, 0);
    for (size_t i : s) ++counts[static_cast<size_t>(labels[i])];
    for (size_t c = 0; c < 10; ++c) {
      const double share = static_cast<double>(counts[c]) / static_cast<double>(s.size());
      EXPECT_GT(share, 0.05) << "class " << c;
      EXPECT_LT(share, 0.15) << "class " << c;
    }
    EXPECT_NEAR(static_cast<double>(s.size()), 600.0, 90.0);
  }
}

TEST(PartitionDirichletTest, IsReproducibleBySeed) {
  const std::vector<int64_t> labels = BalancedLabels();
  absl::StatusOr<Shards> a = Partition("dirichlet:0.5", labels, 10, 10, 3);
  absl::StatusOr<Shards> b = Partition("dirichlet:0.5", labels, 10, 10, 3);
  absl::StatusOr<Shards> c = Partition("dirichlet:0.5", labels, 10, 10, 4);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST(PartitionDirichletTest, RefusesWhenTheMinimumSizeCannotBeMet) {
  const std::vector<int64_t> labels = BalancedLabels(5, 10);  // 50 examples
  absl::StatusOr<Shards> shards = PartitionDirichlet(labels, 10, 10, 0.5, 1, /*min_size=*/10);
  ASSERT_FALSE(shards.ok());
  EXPECT_THAT(std::string(shards.status().message()), HasSubstr("cannot give each of 10 clients 10 examples from 50"));
}

TEST(PartitionDirichletTest, RefusesANonPositiveAlpha) {
  absl::StatusOr<Shards> shards = PartitionDirichlet(BalancedLabels(), 10, 10, 0, 1);
  ASSERT_FALSE(shards.ok());
  EXPECT_THAT(std::string(shards.status().message()), HasSubstr("alpha: expected > 0, got 0"));
}

// When every client already holds its fair share (n / clients) before the last classes are
// dealt, those classes get total weight 0 and are skipped, so their examples reach no
// client. Two clients, five examples: if class 0 splits 2/2, the single class-1 example
// is dropped (for about half of the seeds).
TEST(PartitionDirichletTest, CoversEveryExampleEvenWhenAllClientsReachTheirFairShareEarly) {
  const std::vector<int64_t> labels = {0, 0, 0, 0, 1};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    absl::StatusOr<Shards> shards = PartitionDirichlet(labels, 2, 2, 100, seed, /*min_size=*/1);
    ASSERT_TRUE(shards.ok()) << shards.status();
    ExpectDisjointAndCovering(*shards, labels.size());
  }
}

TEST(PartitionTest, ErrorsQuoteTheBadSpec) {
  const std::vector<int64_t> labels = BalancedLabels();
  for (const char* bad : {"", "IID", "dirichlet", "dirichlet:", "dirichlet:abc", "dirichlet:0", "dirichlet:-2",
                          "shards:2"}) {
    absl::StatusOr<Shards> shards = Partition(bad, labels, 10, 10, 1);
    ASSERT_FALSE(shards.ok()) << "accepted \"" << bad << "\"";
    EXPECT_EQ(shards.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(shards.status().message()),
                HasSubstr(std::string("expected \"iid\" or \"dirichlet:ALPHA\" with ALPHA > 0, got \"") + bad + "\""));
  }
}

// Partition() accepts any ALPHA that parses and is > 0, including "inf" (absl::SimpleAtod
// reads it); the job config refuses it, but `cohort client --partition` passes the flag
// straight here. Gamma(inf) draws are inf, each share inf / inf is NaN, and the NaN is cast
// to size_t: undefined behaviour, which here hands out 240/240/120 of 600 examples.
TEST(PartitionTest, RefusesAnInfiniteAlpha) {
  absl::StatusOr<Shards> shards = Partition("dirichlet:inf", BalancedLabels(60, 10), 10, 3, 1);
  ASSERT_FALSE(shards.ok()) << "dirichlet:inf was accepted";
  EXPECT_THAT(std::string(shards.status().message()), HasSubstr("got \"dirichlet:inf\""));
}

TEST(PartitionTest, RefusesFewerThanOneClient) {
  absl::StatusOr<Shards> shards = Partition("iid", BalancedLabels(), 10, 0, 1);
  ASSERT_FALSE(shards.ok());
  EXPECT_THAT(std::string(shards.status().message()), HasSubstr("clients: expected >= 1, got 0"));
}

TEST(PartitionTest, IidSpecMatchesPartitionIid) {
  const std::vector<int64_t> labels = BalancedLabels();
  absl::StatusOr<Shards> shards = Partition("iid", labels, 10, 6, 11);
  ASSERT_TRUE(shards.ok());
  EXPECT_EQ(*shards, PartitionIid(labels.size(), 6, 11));
}

TEST(SplitHoldoutTest, MovesTheRequestedFractionAndKeepsEveryIndexOnce) {
  std::vector<size_t> indices(1000);
  std::iota(indices.begin(), indices.end(), 5000);
  const HoldoutSplit split = SplitHoldout(indices, 0.1, 9);
  EXPECT_EQ(split.eval.size(), 100u);
  EXPECT_EQ(split.train.size(), 900u);
  std::vector<size_t> all = split.train;
  all.insert(all.end(), split.eval.begin(), split.eval.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, indices);
  // Shuffled: the held-out set is not just the first or last 100.
  std::vector<size_t> eval = split.eval;
  std::sort(eval.begin(), eval.end());
  EXPECT_GT(eval.back() - eval.front(), 500u);
}

TEST(SplitHoldoutTest, RoundsTheHeldOutCountDownAndIsReproducible) {
  std::vector<size_t> indices(10);
  std::iota(indices.begin(), indices.end(), 0);
  EXPECT_EQ(SplitHoldout(indices, 0.25, 1).eval.size(), 2u);
  EXPECT_EQ(SplitHoldout(indices, 0.0, 1).eval.size(), 0u);
  EXPECT_EQ(SplitHoldout(indices, 0.0, 1).train.size(), 10u);
  EXPECT_EQ(SplitHoldout(indices, 0.3, 1).eval, SplitHoldout(indices, 0.3, 1).eval);
  EXPECT_TRUE(SplitHoldout({}, 0.5, 1).eval.empty());
}

}  // namespace
}  // namespace cohort::training
