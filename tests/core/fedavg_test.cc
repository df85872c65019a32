#include "core/fedavg.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/temp_dir.h"

namespace cohort::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using cohort::testing::TempDir;

// 1000 floats in three tensors: 4000 bytes, so 1024-byte chunks give 4 chunks, the last short.
Manifest ModelManifest() {
  return Manifest({{"layers.1.weight", DType::kFloat32, {20, 40}},
                   {"layers.1.bias", DType::kFloat32, {20}},
                   {"layers.3.weight", DType::kFloat32, {4, 45}}});
}
constexpr size_t kChunkBytes = 1024;

std::vector<float> RandomValues(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

ParameterSet SetOf(const Manifest& manifest, const std::vector<float>& values) {
  ParameterSet set(manifest);
  EXPECT_EQ(set.floats().size(), values.size());
  std::memcpy(set.bytes().data(), values.data(), set.bytes().size());
  return set;
}

std::span<const std::byte> AsBytes(const std::vector<float>& v) { return std::as_bytes(std::span(v)); }

// Spool files in `dir` that still hold an update: all but those StreamingFedAvg keeps for
// reuse (".kept-N"), which hold nothing it will read again.
size_t UpdateFilesIn(const fs::path& dir) {
  size_t n = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    n += e.path().filename().string().find(".kept-") == std::string::npos;
  }
  return n;
}

// Streams `values` through an UpdateReceiver the way the server does, chunk by chunk, and
// finishes it unless a chunk is refused. `chunks_to_send` cuts the stream short.
absl::StatusOr<SpooledUpdate> Receive(const Manifest& manifest, const std::vector<float>& values,
                                      const fs::path& spool, double weight, const std::string& client,
                                      UpdateLimits limits = {}, std::optional<uint32_t> chunks_to_send = {}) {
  const uint32_t count = ChunkCount(manifest.total_bytes(), kChunkBytes);
  absl::StatusOr<UpdateReceiver> receiver = UpdateReceiver::Open(manifest, count, kChunkBytes, spool, limits);
  if (!receiver.ok()) return receiver.status();
  const uint32_t send = chunks_to_send.value_or(count);
  for (uint32_t i = 0; i < send; ++i) {
    if (absl::Status s = receiver->AddChunk(i, count, ChunkOf(AsBytes(values), i, kChunkBytes)); !s.ok()) return s;
  }
  return receiver->Finish(weight, client);
}

// The reference the streaming code must match: global + sum w_k d_k / sum w_k, in double.
std::vector<double> NaiveFedAvg(const std::vector<float>& global, const std::vector<std::vector<float>>& deltas,
                                const std::vector<double>& weights) {
  std::vector<double> out(global.begin(), global.end());
  double total = 0;
  for (double w : weights) total += w;
  for (size_t i = 0; i < out.size(); ++i) {
    double sum = 0;
    for (size_t k = 0; k < deltas.size(); ++k) sum += weights[k] * deltas[k][i];
    out[i] += sum / total;
  }
  return out;
}

TEST(StreamingFedAvgTest, ComputesTheWeightedAverageOfDeltasExactly) {
  TempDir dir;
  const Manifest m({{"w", DType::kFloat32, {2, 2}}, {"b", DType::kFloat32, {1}}});
  // Hand-computed: acc = 1*d1 + 3*d2 = [16, 12, 4, 4, -4]; /4 = [4, 3, 1, 1, -1].
  const std::vector<float> d1 = {1, 0, -2, 4, 0.5f};
  const std::vector<float> d2 = {5, 4, 2, 0, -1.5f};
  StreamingFedAvg avg(m);
  for (auto [values, weight, name] : {std::tuple{&d1, 1.0, "a"}, std::tuple{&d2, 3.0, "b"}}) {
    const uint32_t count = ChunkCount(m.total_bytes(), 8);
    absl::StatusOr<UpdateReceiver> r = UpdateReceiver::Open(m, count, 8, dir.path() / name, {});
    ASSERT_TRUE(r.ok()) << r.status();
    for (uint32_t i = 0; i < count; ++i) ASSERT_TRUE(r->AddChunk(i, count, ChunkOf(AsBytes(*values), i, 8)).ok());
    absl::StatusOr<SpooledUpdate> u = r->Finish(weight, name);
    ASSERT_TRUE(u.ok()) << u.status();
    ASSERT_TRUE(avg.Add(std::move(*u)).ok());
  }
  EXPECT_EQ(avg.count(), 2);
  EXPECT_EQ(avg.total_weight(), 4.0);
  ParameterSet global = SetOf(m, {1, 2, 3, 4, 5});
  ASSERT_TRUE(avg.ApplyTo(global).ok());
  const std::vector<float> expected = {5, 5, 4, 5, 4};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(global.floats()[i], expected[i]) << "element " << i;
}

TEST(UpdateReceiverTest, FinishReportsTheUpdatesL2NormAndKeepsItsSpoolFile) {
  TempDir dir;
  const Manifest m = ModelManifest();
  std::vector<float> v(1000, 0.0f);
  v[0] = 3;
  v[999] = 4;
  const fs::path spool = dir.path() / "u.update";
  absl::StatusOr<SpooledUpdate> u = Receive(m, v, spool, 12, "site-1");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_DOUBLE_EQ(u->l2_norm, 5.0);
  EXPECT_EQ(u->weight, 12);
  EXPECT_EQ(u->client_id, "site-1");
  EXPECT_EQ(u->path, spool);
  ASSERT_TRUE(fs::exists(spool));
  EXPECT_EQ(fs::file_size(spool), m.total_bytes()) << "the spool file holds exactly the update's bytes";
}

// A spool file that lost its tail between the upload and the fold (a disk fault, someone
// cleaning the directory) must fail the fold with DataLoss naming the file, never fold the
// zeros or garbage a short read would leave in the window.
TEST(StreamingFedAvgTest, ASpoolFileCutShortBeforeTheFoldIsDataLossNamingTheFile) {
  TempDir dir;
  const Manifest m = ModelManifest();
  const fs::path spool = dir.path() / "u.update";
  absl::StatusOr<SpooledUpdate> u = Receive(m, RandomValues(1000, 3), spool, 10, "site-1");
  ASSERT_TRUE(u.ok()) << u.status();
  fs::resize_file(spool, m.total_bytes() - 4);
  StreamingFedAvg avg(m);
  ASSERT_TRUE(avg.Add(std::move(*u)).ok());
  ParameterSet global = SetOf(m, RandomValues(1000, 9));
  const std::vector<float> before(global.floats().begin(), global.floats().end());
  const absl::Status applied = avg.ApplyTo(global);
  EXPECT_EQ(applied.code(), absl::StatusCode::kDataLoss) << applied;
  EXPECT_THAT(applied.message(), ::testing::HasSubstr(spool.string()));
  EXPECT_THAT(applied.message(), ::testing::HasSubstr("short"));
  EXPECT_EQ(std::vector<float>(global.floats().begin(), global.floats().end()), before)
      << "a failed fold changed the global model";
}

// A full disk under the spool: the chunk is refused with ResourceExhausted naming the file,
// the rest of the upload is refused too (the file no longer holds a prefix of the update).
TEST(UpdateReceiverTest, AFullDiskRefusesTheChunkAndTheRestOfTheUpload) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this machine";
  TempDir dir;
  const Manifest m = ModelManifest();
  const fs::path spool = dir.path() / "full.update";
  fs::create_symlink("/dev/full", spool);
  const std::vector<float> values = RandomValues(1000, 4);
  const uint32_t count = ChunkCount(m.total_bytes(), 400);
  absl::StatusOr<UpdateReceiver> r = UpdateReceiver::Open(m, count, 400, spool, {});
  ASSERT_TRUE(r.ok()) << r.status();
  const absl::Status first = r->AddChunk(0, count, ChunkOf(AsBytes(values), 0, 400));
  EXPECT_EQ(first.code(), absl::StatusCode::kResourceExhausted) << first;
  EXPECT_THAT(first.message(), ::testing::HasSubstr(spool.string()));
  const absl::Status second = r->AddChunk(1, count, ChunkOf(AsBytes(values), 1, 400));
  EXPECT_EQ(second.code(), absl::StatusCode::kFailedPrecondition) << second;
}

TEST(UpdateReceiverTest, TheScanFindsEachNanAndInfWhereverItLiesAndTheNormMatchesADoubleSum) {
  TempDir dir;
  const Manifest m = ModelManifest();  // 1,000 floats: chunks of 256, the last of 232
  std::vector<float> v = RandomValues(1000, 21);
  v[17] = 1e30f;    // its square needs a double
  v[998] = 3e-39f;  // subnormal, and finite
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * x;
  absl::StatusOr<SpooledUpdate> u = Receive(m, v, dir.path() / "u", 1, "a");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_NEAR(u->l2_norm, std::sqrt(sum), 1e-12 * std::sqrt(sum));

  // At the start and end of a 16-float step, across chunks, in the last chunk's tail.
  for (size_t at : {0, 15, 16, 255, 263, 990, 999}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      SCOPED_TRACE(::testing::Message() << "value " << bad << " at " << at);
      std::vector<float> w = v;
      w[at] = bad;
      absl::StatusOr<SpooledUpdate> r = Receive(m, w, dir.path() / "bad", 1, "a");
      ASSERT_FALSE(r.ok());
      EXPECT_THAT(std::string(r.status().message()), HasSubstr(absl::StrCat("chunk ", at / 256, " holds 1 NaN or Inf")));
    }
  }
  std::vector<float> w = v;
  w[770] = w[999] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(std::string(Receive(m, w, dir.path() / "bad", 1, "a").status().message()),
              HasSubstr("chunk 3 holds 2 NaN or Inf"));
}

TEST(UpdateReceiverTest, OpenRefusesNonFloatModelsAndChunkSizesThatSplitAFloat) {
  TempDir dir;
  const Manifest ints({{"step", DType::kInt64, {1}}});
  EXPECT_FALSE(UpdateReceiver::Open(ints, 1, 1024, dir.path() / "a", {}).ok());
  absl::StatusOr<UpdateReceiver> odd = UpdateReceiver::Open(ModelManifest(), 4, 1022, dir.path() / "b", {});
  ASSERT_FALSE(odd.ok());
  EXPECT_THAT(std::string(odd.status().message()), HasSubstr("got 1022"));
  EXPECT_FALSE(UpdateReceiver::Open(ModelManifest(), 4, 0, dir.path() / "c", {}).ok());
}

TEST(UpdateReceiverTest, ANonPositiveWeightIsRefused) {
  TempDir dir;
  absl::StatusOr<SpooledUpdate> u = Receive(ModelManifest(), RandomValues(1000, 1), dir.path() / "u", 0, "a");
  ASSERT_FALSE(u.ok());
  EXPECT_THAT(std::string(u.status().message()), HasSubstr("num_samples"));
  EXPECT_FALSE(fs::exists(dir.path() / "u"));
}

TEST(UpdateReceiverTest, AChunkHoldingNanIsRefusedAndFinishCannotSucceedAfterIt) {
  TempDir dir;
  const Manifest m = ModelManifest();
  std::vector<float> v = RandomValues(1000, 2);
  v[990] = std::numeric_limits<float>::quiet_NaN();
  v[991] = std::numeric_limits<float>::infinity();
  const fs::path spool = dir.path() / "bad.update";
  {
    const uint32_t count = ChunkCount(m.total_bytes(), kChunkBytes);
    absl::StatusOr<UpdateReceiver> r = UpdateReceiver::Open(m, count, kChunkBytes, spool, {});
    ASSERT_TRUE(r.ok());
    for (uint32_t i = 0; i + 1 < count; ++i) ASSERT_TRUE(r->AddChunk(i, count, ChunkOf(AsBytes(v), i, kChunkBytes)).ok());
    const absl::Status s = r->AddChunk(count - 1, count, ChunkOf(AsBytes(v), count - 1, kChunkBytes));
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr("chunk 3 holds 2 NaN or Inf values"));
    // A caller that ignores the refusal still cannot turn the stream into an update.
    EXPECT_FALSE(r->Finish(10, "bad").ok());
  }
  EXPECT_FALSE(fs::exists(spool)) << "a rejected update's spool file must be removed";
}

TEST(FoldWeightedTest, MatchesANaiveLoopForOneToNineInputsOddLengthsAndOneOrTwoThreads) {
  // Lengths around the 16384-float block and thread split boundaries.
  for (size_t n : {size_t{1}, size_t{3}, size_t{1001}, size_t{16383}, size_t{16385}, size_t{3 * 16384 + 7}}) {
    for (int inputs_count = 1; inputs_count <= 9; ++inputs_count) {
      std::vector<std::vector<float>> values;
      std::vector<WeightedInput> inputs;
      for (int k = 0; k < inputs_count; ++k) {
        values.push_back(RandomValues(n, 100 + static_cast<uint64_t>(k) * 7 + n));
      }
      for (int k = 0; k < inputs_count; ++k) inputs.push_back({0.5f + static_cast<float>(k), values[k].data()});
      const std::vector<float> start = RandomValues(n, 99);
      std::vector<double> naive(start.begin(), start.end());
      for (size_t i = 0; i < n; ++i) {
        for (int k = 0; k < inputs_count; ++k) naive[i] += double{inputs[k].weight} * values[k][i];
      }
      for (int threads : {1, 2}) {
        SCOPED_TRACE(::testing::Message() << "n " << n << ", inputs " << inputs_count << ", threads " << threads);
        std::vector<float> acc = start;
        FoldWeighted(acc, inputs, threads);
        size_t mismatches = 0;
        for (size_t i = 0; i < n; ++i) {
          if (std::abs(acc[i] - naive[i]) > 1e-5 * (1 + std::abs(naive[i]))) ++mismatches;
        }
        ASSERT_EQ(mismatches, 0u);
      }
    }
  }
}

TEST(FoldWeightedTest, TwoThreadsGiveTheSameBitsAsOne) {
  // Each element's arithmetic does not depend on which thread runs it.
  const size_t n = 5 * 16384 + 3;
  std::vector<std::vector<float>> values;
  std::vector<WeightedInput> inputs;
  for (int k = 0; k < 6; ++k) values.push_back(RandomValues(n, 500 + k));
  for (int k = 0; k < 6; ++k) inputs.push_back({1.0f / (k + 1), values[k].data()});
  std::vector<float> one(n, 0.25f), two(n, 0.25f), many(n, 0.25f);
  FoldWeighted(one, inputs, 1);
  FoldWeighted(two, inputs, 2);
  FoldWeighted(many, inputs, 16);
  EXPECT_EQ(std::memcmp(one.data(), two.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(one.data(), many.data(), n * sizeof(float)), 0);
}

TEST(FoldWeightedTest, NoInputsLeaveTheAccumulatorUnchanged) {
  std::vector<float> acc = {1, 2, 3};
  FoldWeighted(acc, {}, 2);
  EXPECT_EQ(acc, (std::vector<float>{1, 2, 3}));
}

// Seven updates through the whole path (receiver, spool file, streaming fold).
std::vector<float> AverageOfSeven(int fold_batch, int threads, const fs::path& dir) {
  const Manifest m = ModelManifest();
  StreamingFedAvg avg(m, threads, fold_batch);
  for (int k = 0; k < 7; ++k) {
    absl::StatusOr<SpooledUpdate> u =
        Receive(m, RandomValues(1000, 10 + k), dir / ("u" + std::to_string(k)), 10.0 + 13 * k, "c");
    if (!u.ok()) {
      ADD_FAILURE() << u.status();
      return {};
    }
    EXPECT_TRUE(avg.Add(std::move(*u)).ok());
  }
  ParameterSet global = SetOf(m, RandomValues(1000, 9));
  EXPECT_TRUE(avg.ApplyTo(global).ok());
  return std::vector<float>(global.floats().begin(), global.floats().end());
}

TEST(StreamingFedAvgTest, FoldBatchSizeDoesNotChangeTheResult) {
  TempDir dir;
  std::vector<std::vector<float>> deltas;
  std::vector<double> weights;
  for (int k = 0; k < 7; ++k) {
    deltas.push_back(RandomValues(1000, 10 + k));
    weights.push_back(10.0 + 13 * k);
  }
  const std::vector<double> expected = NaiveFedAvg(RandomValues(1000, 9), deltas, weights);
  for (int fold_batch : {1, 3, 8}) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "fold_batch " << fold_batch << ", threads " << threads);
      const std::vector<float> got = AverageOfSeven(fold_batch, threads, dir.path());
      ASSERT_EQ(got.size(), expected.size());
      for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expected[i], 1e-5) << "element " << i;
      EXPECT_TRUE(fs::is_empty(dir.path())) << "every folded spool file is deleted";
    }
  }
}

TEST(StreamingFedAvgTest, AddedSpoolFilesAreDeletedOnceFolded) {
  TempDir dir;
  const Manifest m = ModelManifest();
  StreamingFedAvg avg(m, 1, /*fold_batch=*/2);
  absl::StatusOr<SpooledUpdate> a = Receive(m, RandomValues(1000, 1), dir.path() / "a", 1, "a");
  absl::StatusOr<SpooledUpdate> b = Receive(m, RandomValues(1000, 2), dir.path() / "b", 1, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(avg.Add(std::move(*a)).ok());
  EXPECT_TRUE(fs::exists(dir.path() / "a")) << "still pending: the batch is not full";
  ASSERT_TRUE(avg.Add(std::move(*b)).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "a"));
  EXPECT_FALSE(fs::exists(dir.path() / "b"));
}

enum class Rejection { kNanInLastChunk, kStreamEndsAChunkEarly, kNormOverTheBound };

std::string RejectionName(const ::testing::TestParamInfo<Rejection>& param) {
  switch (param.param) {
    case Rejection::kNanInLastChunk: return "NanInLastChunk";
    case Rejection::kStreamEndsAChunkEarly: return "StreamEndsAChunkEarly";
    case Rejection::kNormOverTheBound: return "NormOverTheBound";
  }
  return "Unknown";
}

class RejectedUpdateTest : public ::testing::TestWithParam<Rejection> {};

// The aggregate after two good updates plus one rejected one must be bit for bit the
// aggregate of the two good updates alone, and the rejected update's spool file must be gone.
TEST_P(RejectedUpdateTest, LeavesNoTraceInTheAggregate) {
  TempDir dir;
  const Manifest m = ModelManifest();
  const std::vector<float> good1 = RandomValues(1000, 21, 0.1f), good2 = RandomValues(1000, 22, 0.1f);
  std::vector<float> bad = RandomValues(1000, 23, 0.1f);
  std::optional<uint32_t> chunks_to_send;
  switch (GetParam()) {
    case Rejection::kNanInLastChunk: bad[999] = std::numeric_limits<float>::quiet_NaN(); break;
    case Rejection::kStreamEndsAChunkEarly: chunks_to_send = 3; break;
    case Rejection::kNormOverTheBound:
      for (float& x : bad) x *= 100;  // norm ~ 100 * 0.1 * sqrt(1000 / 3) ~ 180
      break;
  }
  // Good updates have norm ~ 0.1 * sqrt(1000 / 3) ~ 1.8.
  const UpdateLimits limits{.max_l2_norm = 10.0};

  StreamingFedAvg with_rejected(m);
  const fs::path bad_spool = dir.path() / "bad.update";
  {
    absl::StatusOr<SpooledUpdate> u1 = Receive(m, good1, dir.path() / "g1.update", 100, "g1", limits);
    absl::StatusOr<SpooledUpdate> ub = Receive(m, bad, bad_spool, 1000, "bad", limits, chunks_to_send);
    absl::StatusOr<SpooledUpdate> u2 = Receive(m, good2, dir.path() / "g2.update", 300, "g2", limits);
    ASSERT_TRUE(u1.ok()) << u1.status();
    ASSERT_TRUE(u2.ok()) << u2.status();
    ASSERT_FALSE(ub.ok()) << "the corrupt update was accepted";
    // Only what Finish accepted reaches the aggregate.
    for (absl::StatusOr<SpooledUpdate>* u : {&u1, &ub, &u2}) {
      if (u->ok()) {
        ASSERT_TRUE(with_rejected.Add(std::move(**u)).ok());
      }
    }
  }
  EXPECT_FALSE(fs::exists(bad_spool)) << "the rejected update's spool file is still there";
  EXPECT_EQ(with_rejected.count(), 2);
  EXPECT_EQ(with_rejected.total_weight(), 400);

  StreamingFedAvg clean(m);
  {
    absl::StatusOr<SpooledUpdate> u1 = Receive(m, good1, dir.path() / "c1.update", 100, "g1", limits);
    absl::StatusOr<SpooledUpdate> u2 = Receive(m, good2, dir.path() / "c2.update", 300, "g2", limits);
    ASSERT_TRUE(u1.ok() && u2.ok());
    ASSERT_TRUE(clean.Add(std::move(*u1)).ok());
    ASSERT_TRUE(clean.Add(std::move(*u2)).ok());
  }

  const std::vector<float> start = RandomValues(1000, 24);
  ParameterSet a = SetOf(m, start), b = SetOf(m, start);
  ASSERT_TRUE(with_rejected.ApplyTo(a).ok());
  ASSERT_TRUE(clean.ApplyTo(b).ok());
  EXPECT_EQ(std::memcmp(a.bytes().data(), b.bytes().data(), m.total_bytes()), 0)
      << "the rejected update changed the aggregate";
  EXPECT_NE(std::memcmp(a.bytes().data(), start.data(), m.total_bytes()), 0) << "the good updates were not applied";
  EXPECT_EQ(UpdateFilesIn(dir.path()), 0u) << "spool files left behind";
}

INSTANTIATE_TEST_SUITE_P(EveryRejection, RejectedUpdateTest,
                         ::testing::Values(Rejection::kNanInLastChunk, Rejection::kStreamEndsAChunkEarly,
                                           Rejection::kNormOverTheBound),
                         RejectionName);

TEST(UpdateReceiverTest, TheNormBoundMessageGivesTheNormAndTheBound) {
  TempDir dir;
  std::vector<float> v(1000, 0.0f);
  v[5] = 30;
  v[500] = 40;
  absl::StatusOr<SpooledUpdate> u =
      Receive(ModelManifest(), v, dir.path() / "u", 1, "a", UpdateLimits{.max_l2_norm = 49.5});
  ASSERT_FALSE(u.ok());
  EXPECT_THAT(std::string(u.status().message()), HasSubstr("update L2 norm 50 exceeds federation.max_update_norm 49.5"));
  // At the bound exactly is allowed.
  EXPECT_TRUE(Receive(ModelManifest(), v, dir.path() / "w", 1, "a", UpdateLimits{.max_l2_norm = 50}).ok());
}

TEST(StreamingFedAvgTest, ResetDropsPendingSpoolFilesAndEverythingFolded) {
  TempDir dir;
  const Manifest m = ModelManifest();
  StreamingFedAvg avg(m, 2, /*fold_batch=*/3);
  // Four updates: three folded into the accumulator, one still pending.
  for (int k = 0; k < 4; ++k) {
    absl::StatusOr<SpooledUpdate> u =
        Receive(m, RandomValues(1000, 30 + k), dir.path() / ("u" + std::to_string(k)), 5, "c");
    ASSERT_TRUE(u.ok());
    ASSERT_TRUE(avg.Add(std::move(*u)).ok());
  }
  ASSERT_TRUE(fs::exists(dir.path() / "u3"));
  avg.Reset();
  EXPECT_FALSE(fs::exists(dir.path() / "u3")) << "Reset left a pending spool file";
  EXPECT_EQ(UpdateFilesIn(dir.path()), 0u);
  EXPECT_EQ(avg.count(), 0);
  EXPECT_EQ(avg.total_weight(), 0);
  ParameterSet global = SetOf(m, RandomValues(1000, 40));
  EXPECT_EQ(avg.ApplyTo(global).code(), absl::StatusCode::kFailedPrecondition);

  // The retried round sees only its own update: the result is global + that delta.
  const std::vector<float> delta = RandomValues(1000, 41);
  absl::StatusOr<SpooledUpdate> u = Receive(m, delta, dir.path() / "retry", 7, "c");
  ASSERT_TRUE(u.ok());
  ASSERT_TRUE(avg.Add(std::move(*u)).ok());
  const std::vector<float> start(global.floats().begin(), global.floats().end());
  ASSERT_TRUE(avg.ApplyTo(global).ok());
  for (size_t i = 0; i < start.size(); ++i) ASSERT_NEAR(global.floats()[i], start[i] + delta[i], 1e-6) << i;
}

TEST(StreamingFedAvgTest, ApplyToWithNothingAddedFailsAndLeavesTheModelAlone) {
  const Manifest m = ModelManifest();
  StreamingFedAvg avg(m);
  const std::vector<float> start = RandomValues(1000, 50);
  ParameterSet global = SetOf(m, start);
  const absl::Status s = avg.ApplyTo(global);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no accepted updates"));
  EXPECT_EQ(std::memcmp(global.bytes().data(), start.data(), m.total_bytes()), 0);
}

TEST(StreamingFedAvgTest, ApplyToAModelOfAnotherLayoutFails) {
  TempDir dir;
  const Manifest m = ModelManifest();
  StreamingFedAvg avg(m);
  absl::StatusOr<SpooledUpdate> u = Receive(m, RandomValues(1000, 1), dir.path() / "u", 1, "a");
  ASSERT_TRUE(u.ok());
  ASSERT_TRUE(avg.Add(std::move(*u)).ok());
  // Same tensors and total size, one shape transposed.
  ParameterSet other(Manifest({{"layers.1.weight", DType::kFloat32, {40, 20}},
                               {"layers.1.bias", DType::kFloat32, {20}},
                               {"layers.3.weight", DType::kFloat32, {4, 45}}}));
  const absl::Status s = avg.ApplyTo(other);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("layers.1.weight"));
  for (float x : other.floats()) ASSERT_EQ(x, 0.0f) << "a refused model must not be changed";
}

TEST(StreamingFedAvgTest, AShortSpoolFileFailsTheFoldInsteadOfReadingZeros) {
  TempDir dir;
  const Manifest m = ModelManifest();
  const fs::path path = dir.path() / "short.update";
  {
    std::ofstream out(path, std::ios::binary);
    const std::vector<float> half(500, 1.0f);
    out.write(reinterpret_cast<const char*>(half.data()), static_cast<std::streamsize>(half.size() * sizeof(float)));
  }
  StreamingFedAvg avg(m);
  ASSERT_TRUE(avg.Add(SpooledUpdate{path, 1, 1, "a", 0, nullptr}).ok());
  ParameterSet global(m);
  const absl::Status s = avg.ApplyTo(global);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path.string()));
}


// A stand-in for the sealing codec that core cannot see (wire/sealing.h): each chunk is
// its plaintext XORed with a key byte and the chunk index, followed by 8 bytes: the index
// and a checksum over the index and the encoded bytes. Enough to show that core spools
// what it received, opens with the right index, and reports a chunk that does not open.
class XorCodec final : public ChunkCodec {
 public:
  explicit XorCodec(uint8_t key) : key_(key) {}
  static constexpr size_t kOverhead = 8;
  size_t overhead() const override { return kOverhead; }

  std::vector<std::byte> Encode(uint32_t index, std::span<const std::byte> plain) const {
    std::vector<std::byte> out(plain.size() + kOverhead);
    for (size_t i = 0; i < plain.size(); ++i) out[i] = plain[i] ^ Pad(index, i);
    std::memcpy(out.data() + plain.size(), &index, 4);
    const uint32_t sum = Checksum(index, std::span(out).first(plain.size()));
    std::memcpy(out.data() + plain.size() + 4, &sum, 4);
    return out;
  }
  absl::Status Open(uint32_t index, std::span<const std::byte> encoded, std::span<std::byte> plain) const override {
    opened_ += 1;
    uint32_t stored_index = 0, sum = 0;
    std::memcpy(&stored_index, encoded.data() + plain.size(), 4);
    std::memcpy(&sum, encoded.data() + plain.size() + 4, 4);
    if (encoded.size() != plain.size() + kOverhead || stored_index != index ||
        sum != Checksum(index, encoded.first(plain.size()))) {
      std::fill(plain.begin(), plain.end(), std::byte{0});
      return absl::DataLossError(absl::StrCat("chunk ", index, ": authentication failed"));
    }
    for (size_t i = 0; i < plain.size(); ++i) plain[i] = encoded[i] ^ Pad(index, i);
    return absl::OkStatus();
  }
  absl::StatusOr<std::span<std::byte>> OpenInPlace(uint32_t index, std::span<std::byte> encoded) const override {
    if (encoded.size() < kOverhead) return absl::InvalidArgumentError("short chunk");
    const std::span<std::byte> plain = encoded.first(encoded.size() - kOverhead);
    if (absl::Status s = Open(index, encoded, plain); !s.ok()) return s;  // element-wise, so in place works
    return plain;
  }
  int opened() const { return opened_.load(); }

 private:
  std::byte Pad(uint32_t index, size_t i) const { return std::byte(static_cast<uint8_t>(key_ + index * 31 + i)); }
  static uint32_t Checksum(uint32_t index, std::span<const std::byte> bytes) {
    uint32_t h = 2166136261u ^ index;
    for (std::byte b : bytes) h = (h ^ static_cast<uint8_t>(b)) * 16777619u;
    return h;
  }
  uint8_t key_;
  mutable std::atomic<int> opened_{0};
};

enum class OpenOnArrival { kInPlace, kIntoBuffer };

// Streams `values` encoded by `codec`; `tamper` may alter an encoded chunk before it is
// sent. kInPlace opens each chunk where it arrived, as the server does; kIntoBuffer into the
// receiver's own buffer.
absl::StatusOr<SpooledUpdate> ReceiveEncoded(
    const Manifest& manifest, const std::vector<float>& values, size_t chunk_bytes, const fs::path& spool,
    double weight, const std::string& client, std::shared_ptr<const XorCodec> codec,
    const std::function<void(uint32_t, std::vector<std::byte>&)>& tamper = {}, OpenOnArrival how = OpenOnArrival::kInPlace) {
  const uint32_t count = ChunkCount(manifest.total_bytes(), chunk_bytes);
  absl::StatusOr<UpdateReceiver> receiver = UpdateReceiver::Open(manifest, count, chunk_bytes, spool, {}, codec);
  if (!receiver.ok()) return receiver.status();
  for (uint32_t i = 0; i < count; ++i) {
    std::vector<std::byte> encoded = codec->Encode(i, ChunkOf(AsBytes(values), i, chunk_bytes));
    if (tamper) tamper(i, encoded);
    const absl::Status s = how == OpenOnArrival::kInPlace ? receiver->AddChunkInPlace(i, count, encoded)
                                                    : receiver->AddChunk(i, count, encoded);
    if (!s.ok()) return s;
  }
  return receiver->Finish(weight, client);
}

// 1.3M floats (5.2 MB) in chunks of 786,436 bytes: several fold windows of two chunks
// each, the last window and the last chunk short, so threads split windows unevenly.
Manifest LargeManifest() {
  return Manifest({{"a", DType::kFloat32, {1000, 1000}}, {"b", DType::kFloat32, {300000}}});
}
constexpr size_t kLargeChunkBytes = 786436;

TEST(SealedSpoolTest, EncodedUpdatesAverageExactlyAsPlaintextOnesForEveryBatchAndThreadCount) {
  TempDir dir;
  const Manifest m = LargeManifest();
  const size_t n = m.num_elements();
  std::vector<std::vector<float>> deltas;
  std::vector<double> weights;
  for (int k = 0; k < 5; ++k) {
    deltas.push_back(RandomValues(n, 60 + k));
    weights.push_back(3.0 + 7 * k);
  }
  const std::vector<float> start = RandomValues(n, 59);
  const std::vector<double> expected = NaiveFedAvg(start, deltas, weights);
  for (int fold_batch : {1, 8}) {
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(::testing::Message() << "fold_batch " << fold_batch << ", threads " << threads);
      StreamingFedAvg avg(m, threads, fold_batch);
      auto codec = std::make_shared<const XorCodec>(static_cast<uint8_t>(fold_batch * 10 + threads));
      for (int k = 0; k < 5; ++k) {
        // Both ways of opening on arrival: the server's (in place) and into a buffer.
        absl::StatusOr<SpooledUpdate> u =
            ReceiveEncoded(m, deltas[k], kLargeChunkBytes, dir.path() / ("u" + std::to_string(k)), weights[k], "c",
                           codec, {}, k % 2 == 0 ? OpenOnArrival::kInPlace : OpenOnArrival::kIntoBuffer);
        ASSERT_TRUE(u.ok()) << u.status();
        ASSERT_TRUE(avg.Add(std::move(*u)).ok());
      }
      ParameterSet global = SetOf(m, start);
      ASSERT_TRUE(avg.ApplyTo(global).ok());
      size_t mismatches = 0;
      for (size_t i = 0; i < n; ++i) mismatches += std::abs(global.floats()[i] - expected[i]) > 1e-5;
      EXPECT_EQ(mismatches, 0u);
      // Each chunk is opened twice: once as it arrives, once by the fold; never more.
      EXPECT_EQ(codec->opened(), 5 * 2 * static_cast<int>(ChunkCount(m.total_bytes(), kLargeChunkBytes)));
      EXPECT_EQ(UpdateFilesIn(dir.path()), 0u) << "a folded spool file still holds its update";
    }
    EXPECT_TRUE(fs::is_empty(dir.path())) << "kept spool files outlived their StreamingFedAvg";
  }
}

TEST(SealedSpoolTest, TheSpoolFileHoldsTheChunksExactlyAsReceivedAndNoPlaintext) {
  for (OpenOnArrival how : {OpenOnArrival::kInPlace, OpenOnArrival::kIntoBuffer}) {
    SCOPED_TRACE(how == OpenOnArrival::kInPlace ? "opened in place" : "opened into a buffer");
    TempDir dir;
    const Manifest m = ModelManifest();
    const std::vector<float> values(1000, 1.2345f);
    auto codec = std::make_shared<const XorCodec>(7);
    absl::StatusOr<SpooledUpdate> u = ReceiveEncoded(m, values, kChunkBytes, dir.path() / "u", 1, "a", codec, {}, how);
    ASSERT_TRUE(u.ok()) << u.status();
    std::ifstream in(u->path, std::ios::binary);
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string expected;
    for (uint32_t i = 0; i < 4; ++i) {
      const std::vector<std::byte> chunk = codec->Encode(i, ChunkOf(AsBytes(values), i, kChunkBytes));
      expected.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    }
    EXPECT_EQ(file.size(), m.total_bytes() + 4 * XorCodec::kOverhead);
    EXPECT_TRUE(file == expected) << "the spool file is not the received chunks back to back";
    const std::string pattern(reinterpret_cast<const char*>(values.data()), 4 * sizeof(float));
    EXPECT_EQ(file.find(pattern), std::string::npos) << "plaintext floats found in the spool file";
    EXPECT_EQ(u->chunk_bytes, kChunkBytes);
    EXPECT_EQ(u->codec, codec);
  }
}

TEST(SealedSpoolTest, AChunkThatDoesNotOpenIsRefusedWithTheCodecsCodeAndLeavesNoSpoolFile) {
  for (OpenOnArrival how : {OpenOnArrival::kInPlace, OpenOnArrival::kIntoBuffer}) {
    SCOPED_TRACE(how == OpenOnArrival::kInPlace ? "opened in place" : "opened into a buffer");
    TempDir dir;
    const Manifest m = ModelManifest();
    auto codec = std::make_shared<const XorCodec>(9);
    const fs::path spool = dir.path() / "u";
    absl::StatusOr<SpooledUpdate> u = ReceiveEncoded(
        m, RandomValues(1000, 3), kChunkBytes, spool, 1, "a", codec,
        [](uint32_t i, std::vector<std::byte>& chunk) {
          if (i == 3) chunk[5] ^= std::byte{0x01};
        },
        how);
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(u.status().message()), HasSubstr("chunk 3"));
    EXPECT_FALSE(fs::exists(spool));

    // Shorter than the codec's overhead: refused before it is opened, naming the chunk.
    u = ReceiveEncoded(
        m, RandomValues(1000, 3), kChunkBytes, spool, 1, "a", codec,
        [](uint32_t i, std::vector<std::byte>& chunk) {
          if (i == 1) chunk.resize(5);
        },
        how);
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(u.status().message()), HasSubstr("chunk 1: 5 bytes"));
  }
}

TEST(SealedSpoolTest, AfterAChunkRefusedInPlaceTheReceiverTakesNothingMore) {
  TempDir dir;
  const Manifest m = ModelManifest();
  auto codec = std::make_shared<const XorCodec>(5);
  const std::vector<float> values = RandomValues(1000, 8);
  const uint32_t count = ChunkCount(m.total_bytes(), kChunkBytes);
  absl::StatusOr<UpdateReceiver> receiver = UpdateReceiver::Open(m, count, kChunkBytes, dir.path() / "u", {}, codec);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  std::vector<std::byte> bad = codec->Encode(0, ChunkOf(AsBytes(values), 0, kChunkBytes));
  bad[0] ^= std::byte{0x40};
  EXPECT_EQ(receiver->AddChunkInPlace(0, count, bad).code(), absl::StatusCode::kDataLoss);
  // Its sealed bytes already reached the spool, so even the right chunk 0 cannot follow.
  std::vector<std::byte> good = codec->Encode(0, ChunkOf(AsBytes(values), 0, kChunkBytes));
  const absl::Status again = receiver->AddChunkInPlace(0, count, good);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.message()), HasSubstr("start over"));
  EXPECT_FALSE(receiver->Finish(1, "a").ok());
}

// The server keeps each upload's receiver in the upload's state and moves it there: a
// refusal must move with it, or a client could send the right chunk after a forged one.
TEST(SealedSpoolTest, AReceiverMovedAfterARefusalStillTakesNothingMore) {
  TempDir dir;
  const Manifest m = ModelManifest();
  auto codec = std::make_shared<const XorCodec>(5);
  const std::vector<float> values = RandomValues(1000, 9);
  const uint32_t count = ChunkCount(m.total_bytes(), kChunkBytes);
  absl::StatusOr<UpdateReceiver> receiver = UpdateReceiver::Open(m, count, kChunkBytes, dir.path() / "u", {}, codec);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  std::vector<std::byte> bad = codec->Encode(0, ChunkOf(AsBytes(values), 0, kChunkBytes));
  bad[0] ^= std::byte{0x40};
  EXPECT_EQ(receiver->AddChunkInPlace(0, count, bad).code(), absl::StatusCode::kDataLoss);
  UpdateReceiver moved(std::move(*receiver));
  std::vector<std::byte> good = codec->Encode(0, ChunkOf(AsBytes(values), 0, kChunkBytes));
  EXPECT_EQ(moved.AddChunkInPlace(0, count, good).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(moved.Finish(1, "a").ok());
}

TEST(SealedSpoolTest, AChunkAlteredAtRestFailsTheFoldNamingTheClient) {
  TempDir dir;
  const Manifest m = ModelManifest();
  auto codec = std::make_shared<const XorCodec>(11);
  absl::StatusOr<SpooledUpdate> u = ReceiveEncoded(m, RandomValues(1000, 4), kChunkBytes, dir.path() / "u", 1,
                                                   "site-x", codec);
  ASSERT_TRUE(u.ok()) << u.status();
  {
    std::fstream f(u->path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2000);
    f.put('\x5a');
  }
  StreamingFedAvg avg(m);
  ASSERT_TRUE(avg.Add(std::move(*u)).ok());
  ParameterSet global(m);
  const absl::Status s = avg.ApplyTo(global);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("site-x"));
  for (float x : global.floats()) ASSERT_EQ(x, 0.0f) << "a failed fold must not change the model";
}

TEST(SealedSpoolTest, PlaintextAndEncodedUpdatesInOneRoundAreFoldedInSeparateBatches) {
  TempDir dir;
  const Manifest m = ModelManifest();
  const std::vector<std::vector<float>> deltas = {RandomValues(1000, 70), RandomValues(1000, 71),
                                                  RandomValues(1000, 72)};
  const std::vector<double> weights = {1, 2, 4};
  StreamingFedAvg avg(m, 2, /*fold_batch=*/8);
  auto codec = std::make_shared<const XorCodec>(13);
  absl::StatusOr<SpooledUpdate> a = ReceiveEncoded(m, deltas[0], kChunkBytes, dir.path() / "a", 1, "a", codec);
  absl::StatusOr<SpooledUpdate> b = Receive(m, deltas[1], dir.path() / "b", 2, "b");
  absl::StatusOr<SpooledUpdate> c = ReceiveEncoded(m, deltas[2], 2048, dir.path() / "c", 4, "c", codec);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_TRUE(avg.Add(std::move(*a)).ok());
  ASSERT_TRUE(avg.Add(std::move(*b)).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "a")) << "another layout flushes the batch before it";
  ASSERT_TRUE(avg.Add(std::move(*c)).ok());
  const std::vector<float> start = RandomValues(1000, 73);
  ParameterSet global = SetOf(m, start);
  ASSERT_TRUE(avg.ApplyTo(global).ok());
  const std::vector<double> expected = NaiveFedAvg(start, deltas, weights);
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_NEAR(global.floats()[i], expected[i], 1e-5) << i;
}

TEST(StreamingFedAvgTest, FoldedSpoolFilesAreWrittenOverByLaterUpdatesAndRemovedWithTheAggregate) {
  TempDir dir;
  const Manifest m = ModelManifest();
  const std::vector<float> first = RandomValues(1000, 80), second = RandomValues(1000, 81);
  {
    StreamingFedAvg avg(m, 1, /*fold_batch=*/2);
    EXPECT_FALSE(avg.ReuseSpoolFile(dir.path() / "none")) << "nothing is kept before a fold";
    absl::StatusOr<SpooledUpdate> u = Receive(m, first, dir.path() / "round-1", 1, "a");
    ASSERT_TRUE(u.ok());
    ASSERT_TRUE(avg.Add(std::move(*u)).ok());
    ParameterSet global(m);
    ASSERT_TRUE(avg.ApplyTo(global).ok());
    EXPECT_FALSE(fs::exists(dir.path() / "round-1"));
    EXPECT_EQ(UpdateFilesIn(dir.path()), 0u);

    // The next round's update is written over the kept file, which now has its name.
    ASSERT_TRUE(avg.ReuseSpoolFile(dir.path() / "round-2"));
    ASSERT_TRUE(fs::exists(dir.path() / "round-2"));
    EXPECT_FALSE(avg.ReuseSpoolFile(dir.path() / "round-2b")) << "one file was kept, and it is taken";
    // A shorter stream leaves nothing of the longer one behind: Finish cuts the file.
    const Manifest half({{"w", DType::kFloat32, {500}}});
    const std::vector<float> small(second.begin(), second.begin() + 500);
    absl::StatusOr<SpooledUpdate> v = Receive(half, small, dir.path() / "round-2", 1, "a");
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(fs::file_size(dir.path() / "round-2"), 2000u);
    std::ifstream in(dir.path() / "round-2", std::ios::binary);
    std::vector<float> back(500);
    in.read(reinterpret_cast<char*>(back.data()), 2000);
    EXPECT_EQ(back, small);
  }
  EXPECT_EQ(UpdateFilesIn(dir.path()), 1u) << "round-2 belongs to its SpooledUpdate, not the aggregate";
  fs::remove(dir.path() / "round-2");
  EXPECT_TRUE(fs::is_empty(dir.path())) << "the aggregate left a kept file behind";
}

}  // namespace
}  // namespace cohort::core
