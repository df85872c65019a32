#include "core/update_compression.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/fedavg.h"
#include "core/job_config.h"
#include "tests/temp_dir.h"

namespace cohort::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using cohort::testing::TempDir;

// 1000 floats: 1024-byte chunks (256 floats) give 4 chunks, the last 232 floats.
Manifest ModelManifest() {
  return Manifest({{"w", DType::kFloat32, {20, 40}}, {"b", DType::kFloat32, {200}}});
}
constexpr size_t kChunkBytes = 1024;
constexpr size_t kPerChunk = kChunkBytes / sizeof(float);

ParameterSet RandomDelta(uint64_t seed, float scale = 0.01f) {
  ParameterSet set(ModelManifest());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  for (float& v : set.floats()) v = dist(rng);
  return set;
}

CompressionConfig Int8(bool stochastic) {
  CompressionConfig c;
  c.method = "int8";
  c.stochastic_rounding = stochastic;
  return c;
}

CompressionConfig TopK(double fraction) {
  CompressionConfig c;
  c.method = "topk";
  c.topk_fraction = fraction;
  return c;
}

std::vector<float> Decode(const EncodedUpdate& encoded, size_t total) {
  std::vector<float> out(total);
  for (size_t c = 0; c < encoded.chunks.size(); ++c) {
    const size_t begin = c * kPerChunk;
    const size_t n = std::min(kPerChunk, total - begin);
    EXPECT_TRUE(DecodeChunk(encoded.encoding, static_cast<uint32_t>(c),
                            std::as_bytes(std::span<const char>(encoded.chunks[c])), std::span(out).subspan(begin, n))
                    .ok());
  }
  return out;
}

float MaxAbs(std::span<const float> v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

TEST(UpdateCompressionTest, Int8RoundTripIsWithinOneScaleStepPerChunk) {
  const ParameterSet delta = RandomDelta(1);
  for (bool stochastic : {false, true}) {
    absl::StatusOr<EncodedUpdate> encoded = CompressUpdate(Int8(stochastic), delta, {}, kChunkBytes, 7);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    ASSERT_EQ(encoded->chunks.size(), 4u);
    // 4 bytes of scale + 1 byte per value: 1000 + 16 bytes for 1000 floats.
    EXPECT_EQ(encoded->payload_bytes(), 1000u + 4 * 4);
    const std::vector<float> decoded = Decode(*encoded, 1000);
    const std::span<const float> x = delta.floats();
    for (size_t c = 0; c < 4; ++c) {
      const size_t begin = c * kPerChunk, n = std::min(kPerChunk, 1000 - begin);
      const float step = MaxAbs(x.subspan(begin, n)) / 127.0f;
      for (size_t i = begin; i < begin + n; ++i) {
        // Nearest: half a step; stochastic: under one step (plus float rounding).
        EXPECT_LE(std::fabs(decoded[i] - x[i]), (stochastic ? 1.0f : 0.5f) * step * 1.0001f) << i;
      }
    }
  }
}

TEST(UpdateCompressionTest, StochasticRoundingIsUnbiased) {
  // One value a third of the way between two steps: nearest rounding is always 1/3 step
  // off; the mean of stochastic roundings over many seeds converges on the value.
  std::vector<float> values = {127.0f, 10.0f + 1.0f / 3.0f};
  const UpdateEncoding int8{CompressionMethod::kInt8, 0};
  double sum = 0;
  constexpr int kTrials = 4000;
  std::string payload;
  std::vector<float> out(2);
  for (int seed = 0; seed < kTrials; ++seed) {
    EncodeChunk(Int8(true), values, static_cast<uint64_t>(seed), &payload);
    ASSERT_TRUE(DecodeChunk(int8, 0, std::as_bytes(std::span<const char>(payload)), out).ok());
    sum += out[1];
  }
  EXPECT_NEAR(sum / kTrials, values[1], 0.03);  // stddev of the mean: 0.47 / sqrt(4000) = 0.0075
  EncodeChunk(Int8(false), values, 0, &payload);
  ASSERT_TRUE(DecodeChunk(int8, 0, std::as_bytes(std::span<const char>(payload)), out).ok());
  EXPECT_FLOAT_EQ(out[1], 10.0f);
}

TEST(UpdateCompressionTest, TopKKeepsTheLargestValuesExactlyAndZeroesTheRest) {
  const ParameterSet delta = RandomDelta(2);
  absl::StatusOr<EncodedUpdate> encoded = CompressUpdate(TopK(0.1), delta, {}, kChunkBytes, 0);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  const std::vector<float> decoded = Decode(*encoded, 1000);
  const std::span<const float> x = delta.floats();
  for (size_t c = 0; c < 4; ++c) {
    const size_t begin = c * kPerChunk, n = std::min(kPerChunk, 1000 - begin);
    const size_t k = TopKEntries(0.1, n);
    EXPECT_EQ(encoded->chunks[c].size(), 4 + 8 * k);
    std::vector<float> magnitudes;
    for (size_t i = begin; i < begin + n; ++i) magnitudes.push_back(std::fabs(x[i]));
    std::nth_element(magnitudes.begin(), magnitudes.begin() + static_cast<long>(k - 1), magnitudes.end(),
                     std::greater<float>());
    const float threshold = magnitudes[k - 1];
    size_t kept = 0;
    for (size_t i = begin; i < begin + n; ++i) {
      if (decoded[i] != 0) {
        ++kept;
        EXPECT_EQ(decoded[i], x[i]);
        EXPECT_GE(std::fabs(x[i]), threshold);
      } else {
        EXPECT_LE(std::fabs(x[i]), threshold);
      }
    }
    EXPECT_EQ(kept, k);
  }
}

TEST(UpdateCompressionTest, ErrorFeedbackCarriesWhatWasLeftOutIntoTheNextRound) {
  // Over rounds, what the server received plus the site's residual is exactly what the
  // site trained: nothing is lost, only delayed.
  std::vector<float> residual(1000, 0.0f);
  std::vector<double> trained(1000, 0.0), received(1000, 0.0);
  for (uint64_t round = 1; round <= 5; ++round) {
    const ParameterSet delta = RandomDelta(100 + round);
    absl::StatusOr<EncodedUpdate> encoded = CompressUpdate(TopK(0.05), delta, residual, kChunkBytes, round);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    const std::vector<float> decoded = Decode(*encoded, 1000);
    for (size_t i = 0; i < 1000; ++i) {
      trained[i] += delta.floats()[i];
      received[i] += decoded[i];
    }
  }
  double left_out = 0;
  for (size_t i = 0; i < 1000; ++i) {
    EXPECT_NEAR(received[i] + residual[i], trained[i], 1e-5) << i;
    left_out += std::fabs(residual[i]);
  }
  EXPECT_GT(left_out, 0.0);  // top-5% per round does leave something for later
  // Without feedback the same rounds lose what was left out for good.
  std::vector<float> wrong_size(999);
  EXPECT_EQ(CompressUpdate(TopK(0.05), RandomDelta(1), wrong_size, kChunkBytes, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(UpdateCompressionTest, ANonFiniteDeltaDoesNotCompress) {
  ParameterSet delta = RandomDelta(3);
  delta.floats()[500] = std::numeric_limits<float>::quiet_NaN();
  for (const CompressionConfig& config : {Int8(true), TopK(0.01)}) {
    absl::StatusOr<EncodedUpdate> encoded = CompressUpdate(config, delta, {}, kChunkBytes, 0);
    ASSERT_FALSE(encoded.ok());
    EXPECT_THAT(encoded.status().message(), HasSubstr("chunk 1"));
  }
}

// --- hostile payloads: each rule of the encoding refused, naming the chunk ---

std::string Int8Payload(float scale, std::vector<int8_t> q) {
  std::string p(reinterpret_cast<const char*>(&scale), 4);
  p.append(reinterpret_cast<const char*>(q.data()), q.size());
  return p;
}

std::string TopKPayload(uint32_t k, std::vector<std::pair<uint32_t, float>> entries) {
  std::string p(reinterpret_cast<const char*>(&k), 4);
  for (auto [index, value] : entries) {
    p.append(reinterpret_cast<const char*>(&index), 4);
    p.append(reinterpret_cast<const char*>(&value), 4);
  }
  return p;
}

absl::Status DecodeInto(const UpdateEncoding& encoding, const std::string& payload, size_t n) {
  std::vector<float> out(n);
  return DecodeChunk(encoding, 9, std::as_bytes(std::span<const char>(payload)), out);
}

TEST(UpdateCompressionTest, HostileInt8ChunksAreRefused) {
  const UpdateEncoding int8{CompressionMethod::kInt8, 0};
  EXPECT_TRUE(DecodeInto(int8, Int8Payload(0.5f, {1, -127, 127, 0}), 4).ok());
  struct Case {
    std::string payload;
    const char* says;
  };
  const float inf = std::numeric_limits<float>::infinity();
  for (const Case& c : std::vector<Case>{
           {Int8Payload(0.5f, {1, 2, 3}), "8 bytes"},  // one value short
           {Int8Payload(0.5f, {1, 2, 3, 4, 5}), "8 bytes"},
           {std::string("\x01\x02", 2), "8 bytes"},
           {Int8Payload(std::numeric_limits<float>::quiet_NaN(), {1, 2, 3, 4}), "scale"},
           {Int8Payload(inf, {1, 2, 3, 4}), "scale"},
           {Int8Payload(-1.0f, {1, 2, 3, 4}), "scale"},
           {Int8Payload(std::numeric_limits<float>::max(), {1, 2, 3, 4}), "scale"},  // 127 * scale overflows
           {Int8Payload(0.5f, {1, -128, 3, 4}), "-128"},
       }) {
    const absl::Status s = DecodeInto(int8, c.payload, 4);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(s.message(), HasSubstr("chunk 9"));
    EXPECT_THAT(s.message(), HasSubstr(c.says));
  }
}

TEST(UpdateCompressionTest, HostileTopKChunksAreRefused) {
  // 100 values at fraction 0.05: at most 5 entries.
  const UpdateEncoding topk{CompressionMethod::kTopK, 0.05};
  EXPECT_TRUE(DecodeInto(topk, TopKPayload(2, {{3, 1.0f}, {99, -2.0f}}), 100).ok());
  struct Case {
    std::string payload;
    const char* says;
  };
  std::vector<std::pair<uint32_t, float>> six;
  for (uint32_t i = 0; i < 6; ++i) six.push_back({i, 1.0f});
  for (const Case& c : std::vector<Case>{
           {std::string("\x01", 1), "4-byte count"},
           {TopKPayload(0, {}), "count 0"},
           {TopKPayload(6, six), "count 6"},
           {TopKPayload(0xffffffffu, {{1, 1.0f}}), "count 4294967295"},
           {TopKPayload(2, {{1, 1.0f}}), "2 entries is 20 bytes"},  // count says more than follows
           {TopKPayload(1, {{1, 1.0f}, {2, 1.0f}}), "1 entries is 12 bytes"},
           {TopKPayload(1, {{100, 1.0f}}), "index 100"},  // one past the chunk
           {TopKPayload(1, {{0xffffffffu, 1.0f}}), "index 4294967295"},
           {TopKPayload(2, {{5, 1.0f}, {5, 1.0f}}), "index 5"},  // repeated
           {TopKPayload(2, {{7, 1.0f}, {6, 1.0f}}), "index 6"},  // decreasing
           {TopKPayload(1, {{4, std::numeric_limits<float>::quiet_NaN()}}), "NaN or Inf"},
           {TopKPayload(1, {{4, -std::numeric_limits<float>::infinity()}}), "NaN or Inf"},
       }) {
    const absl::Status s = DecodeInto(topk, c.payload, 100);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(s.message(), HasSubstr("chunk 9"));
    EXPECT_THAT(s.message(), HasSubstr(c.says));
  }
}

// --- through the server's receiver and fold (no sealing here; tests/server seals) ---

TEST(UpdateCompressionTest, ACompressedUpdateFoldsToItsDecodedValues) {
  TempDir dir;
  const ParameterSet delta = RandomDelta(4);
  for (const CompressionConfig& config : {Int8(true), TopK(0.2)}) {
    absl::StatusOr<EncodedUpdate> encoded = CompressUpdate(config, delta, {}, kChunkBytes, 3);
    ASSERT_TRUE(encoded.ok());
    const std::vector<float> expected = Decode(*encoded, 1000);
    absl::StatusOr<UpdateReceiver> receiver =
        UpdateReceiver::Open(ModelManifest(), 4, kChunkBytes, dir.path() / "u.update", {}, nullptr, encoded->encoding);
    ASSERT_TRUE(receiver.ok());
    for (uint32_t c = 0; c < 4; ++c) {
      std::string chunk = encoded->chunks[c];
      ASSERT_TRUE(receiver->AddChunkInPlace(c, 4, std::as_writable_bytes(std::span(chunk.data(), chunk.size()))).ok());
    }
    absl::StatusOr<SpooledUpdate> spooled = receiver->Finish(2.0, "site-a");
    ASSERT_TRUE(spooled.ok()) << spooled.status();
    EXPECT_EQ(std::filesystem::file_size(spooled->path), encoded->payload_bytes());  // compressed at rest too
    double sum_squares = 0;
    for (float v : expected) sum_squares += double{v} * v;
    EXPECT_NEAR(spooled->l2_norm, std::sqrt(sum_squares), 1e-6);  // the norm of what the server got
    StreamingFedAvg fedavg(ModelManifest(), 2, 8);
    ASSERT_TRUE(fedavg.Add(std::move(*spooled)).ok());
    ParameterSet global(ModelManifest());
    ASSERT_TRUE(fedavg.ApplyTo(global).ok());
    for (size_t i = 0; i < 1000; ++i) ASSERT_FLOAT_EQ(global.floats()[i], expected[i]) << config.method << " " << i;
  }
}

TEST(UpdateCompressionTest, TheNormBoundAppliesToDecodedValues) {
  TempDir dir;
  ParameterSet delta(ModelManifest());
  std::fill(delta.floats().begin(), delta.floats().end(), 1.0f);  // norm sqrt(1000) = 31.6
  absl::StatusOr<EncodedUpdate> encoded = CompressUpdate(Int8(false), delta, {}, kChunkBytes, 0);
  ASSERT_TRUE(encoded.ok());
  absl::StatusOr<UpdateReceiver> receiver = UpdateReceiver::Open(ModelManifest(), 4, kChunkBytes,
                                                                 dir.path() / "u.update", {30.0}, nullptr,
                                                                 encoded->encoding);
  ASSERT_TRUE(receiver.ok());
  for (uint32_t c = 0; c < 4; ++c) {
    ASSERT_TRUE(receiver->AddChunk(c, 4, std::as_bytes(std::span<const char>(encoded->chunks[c]))).ok());
  }
  absl::StatusOr<SpooledUpdate> spooled = receiver->Finish(1.0, "site-a");
  ASSERT_FALSE(spooled.ok());
  EXPECT_THAT(spooled.status().message(), HasSubstr("max_update_norm"));
}

TEST(UpdateCompressionTest, AReceiverRefusesABadChunkAndEverythingAfterIt) {
  TempDir dir;
  const fs::path spool = dir.path() / "u.update";
  {
    const UpdateEncoding topk{CompressionMethod::kTopK, 0.05};
    absl::StatusOr<UpdateReceiver> receiver = UpdateReceiver::Open(ModelManifest(), 4, kChunkBytes, spool, {},
                                                                   nullptr, topk);
    ASSERT_TRUE(receiver.ok());
    const std::string good = TopKPayload(1, {{0, 1.0f}});
    EXPECT_TRUE(receiver->AddChunk(0, 4, std::as_bytes(std::span<const char>(good))).ok());
    const std::string bad = TopKPayload(1, {{256, 1.0f}});  // chunk 1 has 256 values: 0..255
    const absl::Status refused = receiver->AddChunk(1, 4, std::as_bytes(std::span<const char>(bad)));
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(refused.message(), HasSubstr("chunk 1"));
    EXPECT_FALSE(receiver->AddChunk(1, 4, std::as_bytes(std::span<const char>(good))).ok());
  }
  EXPECT_FALSE(fs::exists(spool));  // a refused update leaves no spool file
}

// --- the configuration ---

TEST(UpdateCompressionTest, ConfigIsValidatedAndRoundTrips) {
  absl::StatusOr<CompressionConfig> c =
      ParseCompressionConfig({{"method", "topk"}, {"topk_fraction", 0.02}, {"error_feedback", false}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->method, "topk");
  EXPECT_EQ(c->topk_fraction, 0.02);
  EXPECT_FALSE(c->error_feedback);
  absl::StatusOr<CompressionConfig> again = ParseCompressionConfig(ToJson(*c));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ToJson(*again), ToJson(*c));

  struct Case {
    nlohmann::json json;
    const char* says;
  };
  for (const Case& bad : std::vector<Case>{
           {{{"method", "zstd"}}, "federation.compression.method"},
           {{{"method", "topk"}, {"topk_fraction", 0}}, "federation.compression.topk_fraction"},
           {{{"method", "topk"}, {"topk_fraction", 0.8}}, "federation.compression.topk_fraction"},
           {{{"method", "int8"}, {"topk_fraction", 0.1}}, "topk_fraction"},  // does not apply to int8
           {{{"method", "topk"}, {"stochastic_rounding", true}}, "stochastic_rounding"},
           {{{"method", "none"}, {"error_feedback", true}}, "error_feedback"},
           {{{"method", "int8"}, {"stochastic_rounding", "yes"}}, "stochastic_rounding"},
       }) {
    absl::StatusOr<CompressionConfig> parsed = ParseCompressionConfig(bad.json);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad.json.dump();
    EXPECT_THAT(parsed.status().message(), HasSubstr(bad.says)) << bad.json.dump();
  }
}

TEST(UpdateCompressionTest, AJobConfigCarriesItsCompression) {
  nlohmann::json job = {{"model_config", {{"layers", nlohmann::json::array()}}},
                        {"federation", {{"compression", {{"method", "int8"}, {"stochastic_rounding", false}}}}}};
  absl::StatusOr<JobConfig> parsed = ParseJobConfig(job);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->federation.compression.method, "int8");
  EXPECT_FALSE(parsed->federation.compression.stochastic_rounding);
  absl::StatusOr<JobConfig> again = ParseJobConfig(ToJson(*parsed));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->federation.compression.method, "int8");
  job["federation"]["compression"] = {{"method", "int4"}};
  EXPECT_THAT(ParseJobConfig(job).status().message(), HasSubstr("federation.compression.method"));
}

}  // namespace
}  // namespace cohort::core
