#include "crypto/psi.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>


namespace cohort::crypto::psi {
namespace {

constexpr std::string_view kDomain = "job-vertical-1";

std::vector<std::string> Ids(const std::string& prefix, int first, int count) {
  std::vector<std::string> ids;
  for (int i = first; i < first + count; ++i) ids.push_back(prefix + std::to_string(i));
  return ids;
}

// One list a party held during a run: whose list it is and its values at that moment.
struct HeldList {
  std::size_t owner = 0;
  std::vector<Point> values;
  bool fully_blinded = false;  // Raised to exactly K, the product of all parties' scalars.
};

struct RingRun {
  std::vector<std::vector<Point>> fully_blinded;  // By owner, in the owner's row order.
  std::vector<std::vector<HeldList>> held;        // By holder: every list it saw or made.
};

// The whole ring of psi.h, without the network: every party's list travels its RingPath,
// the owner masking it when `mask` (OwnerMasksList by default). `held` records what each
// party receives and makes on the way; the fully blinded lists then go to whoever
// intersects them.
RingRun RunRing(const std::vector<std::vector<std::string>>& sets, int threads, bool mask) {
  const std::size_t n = sets.size();
  std::vector<Scalar> keys;
  for (std::size_t i = 0; i < n; ++i) keys.push_back(Scalar::Random());
  RingRun run;
  run.fully_blinded.resize(n);
  run.held.resize(n);
  for (std::size_t owner = 0; owner < n; ++owner) {
    const Scalar mask_scalar = Scalar::Random();
    const Scalar masked_key = mask_scalar.Times(keys[owner]);
    const Scalar unmask = mask_scalar.Inverse();
    std::vector<Point> list = HashAndBlind(kDomain, sets[owner], mask ? masked_key : keys[owner], threads);
    run.held[owner].push_back({owner, list});
    const std::vector<std::size_t> path = RingPath(owner, n);
    for (std::size_t step = 0; step < path.size(); ++step) {
      const std::size_t party = path[step];
      run.held[party].push_back({owner, list});  // What it receives.
      const bool back_at_owner = step + 1 == path.size();
      if (back_at_owner && !mask) break;
      auto next = Blind(list, back_at_owner ? unmask : keys[party], threads);
      EXPECT_TRUE(next.ok()) << next.status();
      list = std::move(*next);
      run.held[party].push_back({owner, list});  // What it makes and sends on (or keeps).
    }
    run.fully_blinded[owner] = list;
  }
  for (std::size_t holder = 0; holder < n; ++holder) {
    for (HeldList& held : run.held[holder]) {
      held.fully_blinded = held.values == run.fully_blinded[held.owner];
    }
  }
  return run;
}

RingRun RunRing(const std::vector<std::vector<std::string>>& sets, int threads = 2) {
  return RunRing(sets, threads, OwnerMasksList(sets.size()));
}

// The identifiers every party ends up with, in the shared row order, one list per party.
std::vector<std::vector<std::string>> AlignedIdentifiers(
    const std::vector<std::vector<std::string>>& sets, const RingRun& run) {
  auto intersection = IntersectAll(run.fully_blinded);
  EXPECT_TRUE(intersection.ok()) << intersection.status();
  std::vector<std::vector<std::string>> aligned(sets.size());
  for (std::size_t party = 0; party < sets.size(); ++party) {
    auto rows = AlignedRows(run.fully_blinded[party], *intersection);
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (!rows.ok()) continue;
    for (std::size_t row : *rows) aligned[party].push_back(sets[party][row]);
  }
  return aligned;
}

std::vector<std::string> SortedIntersection(const std::vector<std::vector<std::string>>& sets) {
  std::vector<std::string> common = sets[0];
  std::sort(common.begin(), common.end());
  for (std::size_t i = 1; i < sets.size(); ++i) {
    std::vector<std::string> other = sets[i];
    std::sort(other.begin(), other.end());
    std::vector<std::string> next;
    std::set_intersection(common.begin(), common.end(), other.begin(), other.end(),
                          std::back_inserter(next));
    common = std::move(next);
  }
  return common;
}

// Every party holds the same identifiers in the same order, and they are the intersection.
void ExpectExactAlignment(const std::vector<std::vector<std::string>>& sets) {
  const RingRun run = RunRing(sets);
  const std::vector<std::vector<std::string>> aligned = AlignedIdentifiers(sets, run);
  for (std::size_t party = 1; party < sets.size(); ++party) {
    EXPECT_EQ(aligned[party], aligned[0]) << "party " << party << " is not aligned with party 0";
  }
  std::vector<std::string> found = aligned[0];
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found, SortedIntersection(sets));
}

TEST(PsiRingPathTest, VisitsEveryOtherPartyInRingOrderThenReturnsToTheOwner) {
  EXPECT_EQ(RingPath(0, 2), (std::vector<std::size_t>{1, 0}));
  EXPECT_EQ(RingPath(1, 2), (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(RingPath(0, 3), (std::vector<std::size_t>{1, 2, 0}));
  EXPECT_EQ(RingPath(2, 3), (std::vector<std::size_t>{0, 1, 2}));
  EXPECT_EQ(RingPath(1, 4), (std::vector<std::size_t>{2, 3, 0, 1}));
  EXPECT_TRUE(RingPath(0, 1).empty());
  EXPECT_TRUE(RingPath(3, 3).empty());
  EXPECT_FALSE(OwnerMasksList(2));
  EXPECT_TRUE(OwnerMasksList(3));
}

TEST(PsiTest, TwoPartiesAlignExactlyOnTheirIntersection) {
  ExpectExactAlignment({{"p3", "p1", "p9", "p4", "p7"}, {"p4", "p2", "p9", "p3", "p8", "p0"}});
}

TEST(PsiTest, ThreePartiesAlignExactlyOnTheIntersectionOfAllThree) {
  // p5 is held by A and B only, p6 by B and C only, p7 by A and C only.
  ExpectExactAlignment({{"p1", "p5", "p2", "p7", "p3"},
                        {"p3", "p6", "p5", "p1", "p2"},
                        {"p2", "p7", "p3", "p6", "p1", "p8"}});
}

TEST(PsiTest, FourPartiesAlign) {
  ExpectExactAlignment({Ids("id", 0, 40), Ids("id", 10, 40), Ids("id", 5, 30), Ids("id", 20, 50)});
}

TEST(PsiTest, DisjointSetsGiveAnEmptyIntersection) {
  const std::vector<std::vector<std::string>> sets = {Ids("a", 0, 50), Ids("b", 0, 50),
                                                      Ids("c", 0, 50)};
  const RingRun run = RunRing(sets);
  auto intersection = IntersectAll(run.fully_blinded);
  ASSERT_TRUE(intersection.ok()) << intersection.status();
  EXPECT_TRUE(intersection->empty());
  auto rows = AlignedRows(run.fully_blinded[1], *intersection);
  ASSERT_TRUE(rows.ok());
  EXPECT_TRUE(rows->empty());
}

TEST(PsiTest, EqualSetsInDifferentOrdersAlignEveryRow) {
  std::vector<std::string> a = Ids("x", 0, 200);
  std::vector<std::string> b = a;
  std::mt19937 random(7);
  std::shuffle(b.begin(), b.end(), random);
  ExpectExactAlignment({a, b});
  const RingRun run = RunRing({a, b});
  auto intersection = IntersectAll(run.fully_blinded);
  ASSERT_TRUE(intersection.ok());
  EXPECT_EQ(intersection->size(), a.size());
}

TEST(PsiTest, RandomSetsOfFiveThousandFindExactlyTheKnownIntersection) {
  // Seeded: A draws 5,000 of 20,000 numbers and B 5,000 of them, so about 1,250 are shared.
  std::mt19937 random(20240512);
  std::vector<int> pool(20000);
  std::iota(pool.begin(), pool.end(), 0);
  std::vector<std::vector<std::string>> sets(2);
  for (auto& set : sets) {
    std::shuffle(pool.begin(), pool.end(), random);
    for (int i = 0; i < 5000; ++i) set.push_back("patient-" + std::to_string(pool[i]));
  }
  const std::vector<std::string> expected = SortedIntersection(sets);
  ASSERT_GT(expected.size(), 1000u);
  const RingRun run = RunRing(sets, /*threads=*/2);
  const auto aligned = AlignedIdentifiers(sets, run);
  EXPECT_EQ(aligned[0], aligned[1]);
  std::vector<std::string> found = aligned[0];
  std::sort(found.begin(), found.end());
  EXPECT_EQ(found, expected);
}

// The privacy property: what a party receives about identifiers it does not hold
// matches none of its own blinded values, at any stage of the ring, nor once every list is
// fully blinded. With three or more parties no party but the owner ever holds a list raised
// to exactly K during the ring (the owner's mask sees to it), so in transit nothing matches
// at all; with two, the party that blinds last makes the fully blinded values itself and
// may match the identifiers it shares, which is the intersection both are meant to learn.
void ExpectNothingMatchesButSharedFullyBlindedValues(
    const std::vector<std::vector<std::string>>& sets, const RingRun& run) {
  const bool three_or_more = sets.size() >= 3;
  for (std::size_t holder = 0; holder < sets.size(); ++holder) {
    std::set<Point> own_values;
    for (const HeldList& held : run.held[holder]) {
      if (held.owner == holder) own_values.insert(held.values.begin(), held.values.end());
    }
    const std::set<std::string> own_ids(sets[holder].begin(), sets[holder].end());
    for (const HeldList& held : run.held[holder]) {
      if (held.owner == holder) continue;
      if (three_or_more) {
        EXPECT_FALSE(held.fully_blinded)
            << "party " << holder << " holds the list of party " << held.owner
            << " raised to exactly K during the ring";
      }
      for (std::size_t row = 0; row < held.values.size(); ++row) {
        const std::string& id = sets[held.owner][row];
        const bool may_match = held.fully_blinded && own_ids.contains(id);
        EXPECT_EQ(own_values.contains(held.values[row]), may_match)
            << "party " << holder << ", list of party " << held.owner << ", id " << id
            << (held.fully_blinded ? " (fully blinded)" : " (in transit)");
      }
    }
    // The fully blinded lists of the others, as whoever intersects receives them.
    for (std::size_t owner = 0; owner < sets.size(); ++owner) {
      if (owner == holder) continue;
      for (std::size_t row = 0; row < sets[owner].size(); ++row) {
        if (own_ids.contains(sets[owner][row])) continue;
        EXPECT_FALSE(own_values.contains(run.fully_blinded[owner][row]))
            << "party " << holder << " matched " << sets[owner][row] << " of party " << owner;
      }
    }
  }
}

TEST(PsiTest, NoPartyCanMatchAnotherPartysValuesBeforeTheyAreFullyBlinded) {
  // Three parties with every kind of overlap: all three, each pair, and no one else.
  const std::vector<std::vector<std::string>> sets = {
      {"all1", "all2", "ab", "ac", "a-only"},
      {"all1", "all2", "ab", "bc", "b-only"},
      {"all2", "all1", "ac", "bc", "c-only"}};
  ExpectNothingMatchesButSharedFullyBlindedValues(sets, RunRing(sets));
  const std::vector<std::vector<std::string>> pair = {sets[0], sets[1]};
  ExpectNothingMatchesButSharedFullyBlindedValues(pair, RunRing(pair));
}

TEST(PsiTest, WithoutTheOwnersMaskTheLastPartyOnTheRingCouldMatchValuesInTransit) {
  // Why three parties need the mask: unmasked, party C blinds A's list last and so holds
  // A's values raised to exactly K before A does, and can compare them with its own.
  const std::vector<std::vector<std::string>> sets = {
      {"all", "ac"}, {"all", "b-only"}, {"all", "ac", "c-only"}};
  const RingRun run = RunRing(sets, /*threads=*/1, /*mask=*/false);
  bool c_matched_ac_in_transit = false;
  std::set<Point> c_own(run.fully_blinded[2].begin(), run.fully_blinded[2].end());
  for (const HeldList& held : run.held[2]) {
    if (held.owner == 0 && held.values.size() == 2 && c_own.contains(held.values[1])) {
      c_matched_ac_in_transit = true;
    }
  }
  EXPECT_TRUE(c_matched_ac_in_transit);
}

TEST(PsiTest, HashAndBlindIsDeterministicPerScalarAndDomainAndSeparatesDomains) {
  const std::vector<std::string> ids = {"alice", "bob", "", "carol"};
  const Scalar k = Scalar::Random();
  const std::vector<Point> first = HashAndBlind(kDomain, ids, k, 1);
  EXPECT_EQ(HashAndBlind(kDomain, ids, k, 1), first);
  const std::vector<Point> other_job = HashAndBlind("job-vertical-2", ids, k, 1);
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_NE(other_job[i], first[i]) << ids[i];
  EXPECT_NE(HashAndBlind(kDomain, ids, Scalar::Random(), 1)[0], first[0]);
  // The domain's length is hashed too, so the boundary between domain and id is fixed.
  const std::vector<std::string> bc = {"bc"}, c = {"c"};
  EXPECT_NE(HashAndBlind("a", bc, k, 1), HashAndBlind("ab", c, k, 1));
  for (const Point& point : first) EXPECT_NE(point, Point{});
}

TEST(PsiTest, ScalarInverseUndoesAndTimesComposesBlinding) {
  const std::vector<std::string> ids = Ids("s", 0, 10);
  const Scalar a = Scalar::Random(), b = Scalar::Random();
  const std::vector<Point> base = HashAndBlind(kDomain, ids, a, 1);
  auto there = Blind(base, b, 1);
  ASSERT_TRUE(there.ok());
  auto back = Blind(*there, b.Inverse(), 1);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, base);
  auto composed = Blind(base, a.Inverse().Times(b), 1);
  ASSERT_TRUE(composed.ok());
  EXPECT_EQ(*composed, HashAndBlind(kDomain, ids, b, 1));
}

TEST(PsiTest, OneThreadAndFourThreadsGiveIdenticalResults) {
  const std::vector<std::string> ids = Ids("t", 0, 1000);
  const Scalar k = Scalar::Random(), j = Scalar::Random();
  const std::vector<Point> one = HashAndBlind(kDomain, ids, k, 1);
  EXPECT_EQ(HashAndBlind(kDomain, ids, k, 4), one);
  EXPECT_EQ(HashAndBlind(kDomain, ids, k, 0), one);
  auto blinded_one = Blind(one, j, 1);
  auto blinded_four = Blind(one, j, 4);
  ASSERT_TRUE(blinded_one.ok() && blinded_four.ok());
  EXPECT_EQ(*blinded_one, *blinded_four);
  // More threads than points, and no points at all.
  const std::vector<std::string> three = {"x", "y", "z"};
  EXPECT_EQ(HashAndBlind(kDomain, three, k, 16), HashAndBlind(kDomain, three, k, 1));
  EXPECT_TRUE(HashAndBlind(kDomain, std::vector<std::string>{}, k, 4).empty());
  auto none = Blind(std::vector<Point>{}, k, 4);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(PsiTest, BlindRefusesAnInvalidEncodingNamingTheFirstBadIndex) {
  std::vector<Point> points = HashAndBlind(kDomain, Ids("v", 0, 1000), Scalar::Random(), 1);
  points[900].fill(0xff);  // Not canonical: larger than the field prime.
  points[700][0] ^= 0x01;  // Makes the encoding negative, which ristretto255 refuses.
  auto blinded = Blind(points, Scalar::Random(), 4);
  ASSERT_TRUE(absl::IsInvalidArgument(blinded.status())) << blinded.status();
  EXPECT_NE(blinded.status().message().find("point 700 of 1000"), std::string::npos)
      << blinded.status();
  EXPECT_NE(blinded.status().message().find("not a valid ristretto255 encoding"),
            std::string::npos);
}

TEST(PsiTest, BlindRefusesTheIdentityNamingItsIndex) {
  std::vector<Point> points = HashAndBlind(kDomain, Ids("i", 0, 5), Scalar::Random(), 1);
  points[3] = Point{};  // The identity's encoding is 32 zero bytes.
  auto blinded = Blind(points, Scalar::Random(), 1);
  ASSERT_TRUE(absl::IsInvalidArgument(blinded.status())) << blinded.status();
  EXPECT_NE(blinded.status().message().find("point 3 of 5 is the identity"), std::string::npos)
      << blinded.status();
}

TEST(PsiTest, PointsRoundTripThroughBytesAndARaggedSizeIsRefused) {
  const std::vector<Point> points = HashAndBlind(kDomain, Ids("w", 0, 3), Scalar::Random(), 1);
  const std::vector<std::uint8_t> bytes = PointsToBytes(points);
  ASSERT_EQ(bytes.size(), 96u);
  auto back = PointsFromBytes(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, points);
  auto empty = PointsFromBytes({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  auto ragged = PointsFromBytes(std::span(bytes).first(65));
  EXPECT_TRUE(absl::IsInvalidArgument(ragged.status())) << ragged.status();
  EXPECT_NE(ragged.status().message().find("65 bytes"), std::string::npos);
}

TEST(PsiTest, IntersectAllRefusesAValueRepeatedWithinOneListNamingTheList) {
  const std::vector<Point> a = HashAndBlind(kDomain, Ids("d", 0, 5), Scalar::Random(), 1);
  std::vector<Point> b = a;
  b.push_back(a[2]);
  const std::vector<std::vector<Point>> lists = {a, b};
  auto intersection = IntersectAll(lists);
  ASSERT_TRUE(absl::IsFailedPrecondition(intersection.status())) << intersection.status();
  EXPECT_NE(intersection.status().message().find("list 1"), std::string::npos);
  EXPECT_TRUE(absl::IsInvalidArgument(IntersectAll({}).status()));
}

TEST(PsiTest, AlignedRowsRefusesAnIntersectionValueThePartyDoesNotHold) {
  const Scalar k = Scalar::Random();
  const std::vector<Point> own = HashAndBlind(kDomain, Ids("r", 0, 5), k, 1);
  const std::vector<Point> other = HashAndBlind(kDomain, Ids("r", 3, 5), k, 1);
  const std::vector<std::vector<Point>> lists = {own, other};
  auto intersection = IntersectAll(lists);
  ASSERT_TRUE(intersection.ok());
  ASSERT_EQ(intersection->size(), 2u);  // r3, r4.
  auto rows = AlignedRows(own, *intersection);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(std::set<std::size_t>(rows->begin(), rows->end()), (std::set<std::size_t>{3, 4}));
  auto foreign = IntersectAll(std::vector<std::vector<Point>>{other});
  ASSERT_TRUE(foreign.ok());
  auto refused = AlignedRows(own, *foreign);
  EXPECT_TRUE(absl::IsDataLoss(refused.status())) << refused.status();
  const std::vector<Point> reversed = {(*intersection)[1], (*intersection)[0]};
  EXPECT_TRUE(absl::IsInvalidArgument(AlignedRows(own, reversed).status()));
  std::vector<Point> repeated = own;
  repeated.push_back(own[0]);
  EXPECT_TRUE(absl::IsFailedPrecondition(AlignedRows(repeated, *intersection).status()));
}

}  // namespace
}  // namespace cohort::crypto::psi
