// Compressed updates against a real server over loopback gRPC (federation.compression,
// core/update_compression.h): the site compresses, then seals; the server opens each
// chunk, decodes it as it arrives and checks the decoded values, spools it still sealed and
// compressed, and decodes it again into its window at the fold. Hostile payloads of every
// class are refused naming the chunk, while an honest update in the same round folds.
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/update_compression.h"
#include "tests/server/served_job.h"
#include "wire/convert.h"

namespace cohort::server {
namespace {

using ::testing::HasSubstr;
using testing::kSmallChunkBytes;
using testing::kSmallChunks;
using testing::kSmallFloats;
using testing::Pulled;
using testing::ServedJob;
using testing::SmallJob;
using v1::TaskHeader;

constexpr size_t kPerChunk = kSmallChunkBytes / sizeof(float);

core::JobConfig CompressedJob(const std::string& method, int64_t per_round, double topk_fraction = 0.1) {
  core::JobConfig config = SmallJob(/*rounds=*/1, per_round, /*min_clients=*/1, /*heartbeat_timeout_s=*/30);
  config.federation.compression.method = method;
  config.federation.compression.topk_fraction = topk_fraction;
  return config;
}

Pulled PullTrain(ServedJob& served, const std::string& site) {
  Pulled p;
  for (int i = 0; i < 20 && p.header.kind() != TaskHeader::TRAIN; ++i) p = served.Pull(site, 1000);
  EXPECT_EQ(p.header.kind(), TaskHeader::TRAIN) << site;
  return p;
}

std::vector<float> Wave(float amplitude) {
  std::vector<float> v(kSmallFloats);
  for (size_t i = 0; i < v.size(); ++i) v[i] = amplitude * std::sin(0.01f * static_cast<float>(i));
  return v;
}

core::ParameterSet AsDelta(const std::vector<float>& values) {
  core::ParameterSet delta(testing::SmallManifest());
  std::copy(values.begin(), values.end(), delta.floats().begin());
  return delta;
}

wire::Session SessionOf(ServedJob& served, const std::string& site) {
  wire::Session session;
  session.job_id = "test-job";
  session.client_id = site;
  session.sealing = served.session(site);
  return session;
}

wire::UpdateInfo InfoFor(const Pulled& task, uint64_t samples) {
  wire::UpdateInfo info = wire::UpdateInfoFor(task.header, samples);
  EXPECT_EQ(info.chunk_bytes, kSmallChunkBytes);
  return info;
}

std::vector<float> FinalModel(ServedJob& served) {
  const absl::Status result = served.Wait();
  EXPECT_TRUE(result.ok()) << result.message();
  absl::StatusOr<core::Checkpoint> checkpoint =
      core::ReadCheckpoint(served.out_dir() / "checkpoint.bin", testing::CheckpointKeyOf(served.out_dir()));
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  if (!checkpoint.ok()) return {};
  return std::vector<float>(checkpoint->model.floats().begin(), checkpoint->model.floats().end());
}

TEST(CompressionTest, AnInt8UpdateCrossesTheWireAtAboutOneBytePerValueAndFoldsWithinOneScaleStep) {
  ServedJob served(CompressedJob("int8", /*per_round=*/1));
  served.Join("site-a", 100);
  const Pulled task = PullTrain(served, "site-a");
  // The task tells the site how to compress.
  EXPECT_THAT(task.header.compression_config_json(), HasSubstr("\"int8\""));

  const std::vector<float> values = Wave(0.5f);
  core::CompressionConfig int8;
  int8.method = "int8";
  absl::StatusOr<core::EncodedUpdate> encoded = core::CompressUpdate(int8, AsDelta(values), {}, kSmallChunkBytes, 1);
  ASSERT_TRUE(encoded.ok());
  wire::FederationClient client(wire::Connection{served.address()});
  uint64_t bytes_sent = 0;
  const absl::Status pushed =
      client.PushEncodedUpdate(SessionOf(served, "site-a"), InfoFor(task, 100), *encoded, &bytes_sent);
  ASSERT_TRUE(pushed.ok()) << pushed;
  // Per chunk 4 bytes of scale + 28 of seal, plus the header: far under 1.05 bytes a value
  // at the real chunk size; these 4,352 values in 5 chunks stay under 1.1.
  EXPECT_GT(bytes_sent, kSmallFloats);
  EXPECT_LT(static_cast<double>(bytes_sent) / kSmallFloats, 1.1);

  const std::vector<float> model = FinalModel(served);
  ASSERT_EQ(model.size(), kSmallFloats);
  for (size_t c = 0; c < kSmallChunks; ++c) {
    float max_abs = 0;
    const size_t end = std::min(kSmallFloats, (c + 1) * kPerChunk);
    for (size_t i = c * kPerChunk; i < end; ++i) max_abs = std::max(max_abs, std::fabs(values[i]));
    for (size_t i = c * kPerChunk; i < end; ++i) {
      ASSERT_LE(std::fabs(model[i] - values[i]), max_abs / 127.0f * 1.0001f) << i;  // initial model is 0
    }
  }
}

TEST(CompressionTest, TopKUpdatesOfTwoSitesFoldToTheWeightedMeanOfWhatEachSent) {
  ServedJob served(CompressedJob("topk", /*per_round=*/2, /*topk_fraction=*/0.05));
  for (const char* site : {"site-a", "site-b"}) served.Join(site, 100);
  core::CompressionConfig topk;
  topk.method = "topk";
  topk.topk_fraction = 0.05;
  std::vector<std::vector<float>> sent;
  wire::FederationClient client(wire::Connection{served.address()});
  for (const auto& [site, amplitude] : std::vector<std::pair<std::string, float>>{{"site-a", 1.0f}, {"site-b", -0.5f}}) {
    const Pulled task = PullTrain(served, site);
    absl::StatusOr<core::EncodedUpdate> encoded =
        core::CompressUpdate(topk, AsDelta(Wave(amplitude)), {}, kSmallChunkBytes, 0);
    ASSERT_TRUE(encoded.ok());
    std::vector<float> decoded(kSmallFloats);
    for (uint32_t c = 0; c < kSmallChunks; ++c) {
      const size_t n = std::min(kPerChunk, kSmallFloats - c * kPerChunk);
      ASSERT_TRUE(core::DecodeChunk(encoded->encoding, c, std::as_bytes(std::span<const char>(encoded->chunks[c])),
                                    std::span(decoded).subspan(c * kPerChunk, n))
                      .ok());
    }
    sent.push_back(decoded);
    const absl::Status pushed = client.PushEncodedUpdate(SessionOf(served, site), InfoFor(task, 100), *encoded);
    ASSERT_TRUE(pushed.ok()) << pushed;
  }
  const std::vector<float> model = FinalModel(served);
  ASSERT_EQ(model.size(), kSmallFloats);
  size_t nonzero = 0;
  for (size_t i = 0; i < kSmallFloats; ++i) {
    ASSERT_NEAR(model[i], 0.5f * (sent[0][i] + sent[1][i]), 1e-6) << i;
    nonzero += model[i] != 0;
  }
  EXPECT_LE(nonzero, 2 * (kSmallChunks * core::TopKEntries(0.05, kPerChunk)));
}

// A chunk payload for the hooks below: little-endian fields back to back.
template <typename... T>
std::string Payload(T... fields) {
  std::string out;
  (out.append(reinterpret_cast<const char*>(&fields), sizeof(fields)), ...);
  return out;
}

std::string Int8Chunk(size_t n, float scale, int8_t fill) {
  return Payload(scale) + std::string(n, static_cast<char>(fill));
}

TEST(CompressionTest, HostileInt8AndTopKChunksAreRefusedNamingTheChunkAndTheHonestUpdateFolds) {
  struct Attack {
    const char* site;
    const char* method;
    std::function<std::string(size_t n)> chunk2;  // the payload sent as chunk 2, sealed
    const char* says;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<Attack> attacks = {
      {"short", "int8", [](size_t n) { return Int8Chunk(n - 1, 0.01f, 1); }, "bytes (scale and values)"},
      {"long", "int8", [](size_t n) { return Int8Chunk(n + 1, 0.01f, 1); }, "bytes (scale and values)"},
      {"nan-scale", "int8", [nan](size_t n) { return Int8Chunk(n, nan, 1); }, "int8 scale"},
      {"inf-scale", "int8", [inf](size_t n) { return Int8Chunk(n, inf, 1); }, "int8 scale"},
      {"huge-scale", "int8", [](size_t n) { return Int8Chunk(n, 1e37f, 1); }, "int8 scale"},
      {"minus-128", "int8", [](size_t n) { return Int8Chunk(n, 0.01f, -128); }, "-128"},
      {"out-of-range", "topk", [](size_t n) { return Payload(1u, static_cast<uint32_t>(n), 1.0f); }, "index 1024"},
      {"huge-index", "topk", [](size_t) { return Payload(1u, 0xfffffff0u, 1.0f); }, "index 4294967280"},
      {"repeated", "topk", [](size_t) { return Payload(2u, 7u, 1.0f, 7u, 1.0f); }, "strictly increasing"},
      {"too-many", "topk",
       [](size_t n) {
         std::string p = Payload(static_cast<uint32_t>(n));
         for (uint32_t i = 0; i < n; ++i) p += Payload(i, 1.0f);
         return p;
       },
       "topk count 1024"},
      {"count-lies", "topk", [](size_t) { return Payload(3u, 1u, 1.0f); }, "3 entries is 28 bytes"},
      {"nan-value", "topk", [nan](size_t) { return Payload(1u, 5u, nan); }, "NaN or Inf"},
  };
  for (const char* method : {"int8", "topk"}) {
    SCOPED_TRACE(method);
    std::vector<const Attack*> mine;
    for (const Attack& a : attacks) {
      if (std::string(a.method) == method) mine.push_back(&a);
    }
    ServedJob served(CompressedJob(method, static_cast<int64_t>(mine.size()) + 1, 0.05));
    for (const Attack* a : mine) served.Join(a->site, 100);
    served.Join("honest", 100);
    core::CompressionConfig config;
    config.method = method;
    config.topk_fraction = 0.05;
    const core::UpdateEncoding encoding = core::EncodingOf(config);
    for (const Attack* a : mine) {
      SCOPED_TRACE(a->site);
      const Pulled task = PullTrain(served, a->site);
      const grpc::Status s = served.Push(
          a->site, 1, task.header.model_version(), Wave(0.1f), 100,
          testing::BeforeSealing([&](v1::UpdateHeader& header, std::vector<v1::Chunk>& chunks) {
            wire::ToProto(encoding, header.mutable_encoding());
            for (v1::Chunk& chunk : chunks) {
              std::vector<float> values(chunk.data().size() / sizeof(float));
              std::memcpy(values.data(), chunk.data().data(), chunk.data().size());
              std::string payload;
              core::EncodeChunk(config, values, 0, &payload);
              chunk.set_data(chunk.index() == 2 ? a->chunk2(values.size()) : payload);
            }
          }));
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr("update from " + std::string(a->site) + " for round 1"));
      EXPECT_THAT(s.error_message(), HasSubstr("chunk 2"));
      EXPECT_THAT(s.error_message(), HasSubstr(a->says));
    }
    // The honest site's update, compressed the same way, folds alone.
    const Pulled task = PullTrain(served, "honest");
    core::CompressionConfig exact = config;
    exact.stochastic_rounding = false;
    std::vector<float> constant(kSmallFloats, 0.25f);
    absl::StatusOr<core::EncodedUpdate> encoded = core::CompressUpdate(exact, AsDelta(constant), {}, kSmallChunkBytes, 0);
    ASSERT_TRUE(encoded.ok());
    wire::FederationClient client(wire::Connection{served.address()});
    ASSERT_TRUE(client.PushEncodedUpdate(SessionOf(served, "honest"), InfoFor(task, 100), *encoded).ok());
    const std::vector<float> model = FinalModel(served);
    ASSERT_EQ(model.size(), kSmallFloats);
    size_t at_quarter = 0;
    for (float v : model) {
      ASSERT_TRUE(v == 0.0f || std::fabs(v - 0.25f) < 1e-6f) << "a refused update reached the aggregate: " << v;
      at_quarter += v != 0.0f;
    }
    // int8 of a constant chunk is exact; topk keeps 5% of each chunk.
    EXPECT_EQ(at_quarter, std::string(method) == "int8" ? kSmallFloats : kSmallChunks * 52 - (52 - 13));
  }
}

TEST(CompressionTest, ATamperedCompressedChunkDoesNotOpen) {
  ServedJob served(CompressedJob("int8", 1));
  served.Join("site-a", 100);
  const Pulled task = PullTrain(served, "site-a");
  core::CompressionConfig int8;
  int8.method = "int8";
  const grpc::Status s = served.Push(
      "site-a", 1, task.header.model_version(), Wave(0.1f), 100,
      testing::PushOptions{[&](v1::UpdateHeader& header, std::vector<v1::Chunk>& chunks) {
                             wire::ToProto(core::EncodingOf(int8), header.mutable_encoding());
                             for (v1::Chunk& chunk : chunks) {
                               std::vector<float> values(chunk.data().size() / sizeof(float));
                               std::memcpy(values.data(), chunk.data().data(), chunk.data().size());
                               std::string payload;
                               core::EncodeChunk(int8, values, 0, &payload);
                               chunk.set_data(payload);
                             }
                           },
                           [](v1::UpdateHeader&, std::vector<v1::Chunk>& chunks) {
                             std::string data = chunks[1].data();
                             data[20] ^= 0x04;  // inside the sealed scale and values
                             chunks[1].set_data(data);
                           },
                           nullptr});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("chunk 1"));
}

TEST(CompressionTest, AnUpdateNotEncodedAsTheJobSaysIsRefusedBeforeAnyChunk) {
  ServedJob served(CompressedJob("topk", 1, 0.05));
  served.Join("site-a", 100);
  const Pulled task = PullTrain(served, "site-a");
  // Plain float32 in a topk job: four times the bytes the job allows.
  grpc::Status s = served.Push("site-a", 1, task.header.model_version(), Wave(0.1f), 100);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("federation.compression is topk (topk_fraction 0.05)"));
  // A larger fraction than the job's is refused too.
  ServedJob other(CompressedJob("topk", 1, 0.05));
  other.Join("site-a", 100);
  const Pulled again = PullTrain(other, "site-a");
  core::CompressionConfig wide;
  wide.method = "topk";
  wide.topk_fraction = 0.5;
  absl::StatusOr<core::EncodedUpdate> encoded = core::CompressUpdate(wide, AsDelta(Wave(0.1f)), {}, kSmallChunkBytes, 0);
  ASSERT_TRUE(encoded.ok());
  wire::FederationClient client(wire::Connection{other.address()});
  const absl::Status pushed = client.PushEncodedUpdate(SessionOf(other, "site-a"), InfoFor(again, 100), *encoded);
  EXPECT_EQ(pushed.code(), absl::StatusCode::kInvalidArgument) << pushed;
  EXPECT_THAT(pushed.message(), HasSubstr("topk_fraction 0.5"));
}

TEST(CompressionTest, TheNormBoundAppliesToTheDecodedUpdate) {
  core::JobConfig config = CompressedJob("int8", 1);
  config.federation.max_update_norm = 10;  // Wave(1) has norm ~46
  ServedJob served(config);
  served.Join("site-a", 100);
  const Pulled task = PullTrain(served, "site-a");
  core::CompressionConfig int8;
  int8.method = "int8";
  absl::StatusOr<core::EncodedUpdate> encoded = core::CompressUpdate(int8, AsDelta(Wave(1.0f)), {}, kSmallChunkBytes, 0);
  ASSERT_TRUE(encoded.ok());
  wire::FederationClient client(wire::Connection{served.address()});
  const absl::Status pushed = client.PushEncodedUpdate(SessionOf(served, "site-a"), InfoFor(task, 100), *encoded);
  EXPECT_EQ(pushed.code(), absl::StatusCode::kInvalidArgument) << pushed;
  EXPECT_THAT(pushed.message(), HasSubstr("max_update_norm"));
}

}  // namespace
}  // namespace cohort::server
