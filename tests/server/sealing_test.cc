// Attacks on the sealed model streams, against a real server over loopback gRPC: every
// chunk of an update is sealed under the keys its client agreed at Join, bound to the
// job, round, client, chunk index and count, model version and direction
// (wire/sealing.h). Each attack must be refused with a status that names the client,
// the round and the chunk, while an honest client's update in the same round is
// accepted and the round completes with exactly that update.
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "crypto/key_agreement.h"
#include "crypto/seal.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

using ::testing::HasSubstr;
using testing::kSmallChunkBytes;
using testing::kSmallChunks;
using testing::kSmallFloats;
using testing::Pulled;
using testing::PushOptions;
using testing::ServedJob;
using testing::SmallJob;
using v1::TaskHeader;

// Pulls until `site` holds a TRAIN task.
Pulled PullTrain(ServedJob& served, const std::string& site) {
  Pulled p;
  for (int i = 0; i < 20 && p.header.kind() != TaskHeader::TRAIN; ++i) p = served.Pull(site, 1000);
  EXPECT_EQ(p.header.kind(), TaskHeader::TRAIN) << site;
  EXPECT_TRUE(p.opened.ok()) << p.opened;
  return p;
}

void ExpectRefused(const grpc::Status& s, grpc::StatusCode code, const std::string& site, uint64_t round,
                   const std::string& detail) {
  EXPECT_EQ(s.error_code(), code) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("update from " + site + " for round " + std::to_string(round)));
  EXPECT_THAT(s.error_message(), HasSubstr(detail));
}

// Waits for the job to end and checks that its last round folded the honest updates
// only: `reported` of them, and every parameter of the checkpointed model is `value`.
void ExpectTheRoundCompletedWithOnly(ServedJob& served, float value, size_t reported) {
  const absl::Status result = served.Wait();
  ASSERT_TRUE(result.ok()) << result.message();
  const nlohmann::json summary = nlohmann::json::parse(served.job().Status().summary_json);
  ASSERT_FALSE(summary["rounds"].empty());
  EXPECT_EQ(summary["rounds"].back()["clients_reported"], reported);
  absl::StatusOr<core::Checkpoint> checkpoint = core::ReadCheckpoint(served.out_dir() / "checkpoint.bin", testing::CheckpointKeyOf(served.out_dir()));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  for (float v : checkpoint->model.floats()) ASSERT_NEAR(v, value, 1e-6) << "a refused update reached the aggregate";
  // Folded files are kept for reuse under ".kept-N" names; none may still be an update's.
  for (const auto& entry : std::filesystem::directory_iterator(served.out_dir() / "spool")) {
    EXPECT_NE(entry.path().filename().string().find(".kept-"), std::string::npos)
        << "a spool file was left behind: " << entry.path();
  }
}

std::vector<float> Filled(float v) { return std::vector<float>(kSmallFloats, v); }

void FlipBit(v1::Chunk& chunk, size_t byte) {
  std::string data = chunk.data();
  data[byte] = static_cast<char>(data[byte] ^ 0x10);
  chunk.set_data(data);
}

TEST(SealingTest, AFlippedBitInTheNonceCiphertextOrTagIsRefusedAndTheHonestUpdateIsFolded) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/4, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  for (const char* site : {"nonce", "body", "tag", "honest"}) served.Join(site, 100);
  std::map<std::string, Pulled> tasks;
  for (const char* site : {"nonce", "body", "tag", "honest"}) tasks[site] = PullTrain(served, site);
  const uint64_t version = tasks["honest"].header.model_version();

  const std::map<std::string, size_t> where = {
      {"nonce", 3}, {"body", crypto::kSealNonceSize + 1000}, {"tag", crypto::kSealNonceSize + kSmallChunkBytes + 7}};
  for (const auto& [site, byte] : where) {
    SCOPED_TRACE(site);
    const grpc::Status s = served.Push(site, 1, version, Filled(5.0f), 100,
                                       testing::AfterSealing([byte = byte](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
                                         FlipBit(c[2], byte);
                                       }));
    ExpectRefused(s, grpc::StatusCode::DATA_LOSS, site, 1, "chunk 2 of 5");
    EXPECT_THAT(s.error_message(), HasSubstr("authentication failed"));
  }
  const grpc::Status honest = served.Push("honest", 1, version, Filled(0.25f), 100);
  ASSERT_TRUE(honest.ok()) << honest.error_message();
  ExpectTheRoundCompletedWithOnly(served, 0.25f, 1);
}

TEST(SealingTest, DroppedRepeatedReorderedRenumberedAndTruncatedChunksAreRefused) {
  const std::vector<std::string> attackers = {"dropped", "repeated", "swapped", "renumbered", "short-chunk",
                                              "short-stream"};
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/7, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  for (const std::string& site : attackers) served.Join(site, 100);
  served.Join("honest", 300);
  std::map<std::string, Pulled> tasks;
  for (const std::string& site : attackers) tasks[site] = PullTrain(served, site);
  const uint64_t version = PullTrain(served, "honest").header.model_version();

  auto push = [&](const std::string& site, testing::ChunkHook hook) {
    return served.Push(site, 1, version, Filled(7.0f), 100, testing::AfterSealing(std::move(hook)));
  };
  // Chunk 2 never arrives: the next one is out of order.
  ExpectRefused(push("dropped", [](v1::UpdateHeader&, std::vector<v1::Chunk>& c) { c.erase(c.begin() + 2); }),
                grpc::StatusCode::INVALID_ARGUMENT, "dropped", 1, "expected chunk 2 of 5, got chunk 3");
  // Chunk 1 arrives twice.
  ExpectRefused(push("repeated", [](v1::UpdateHeader&, std::vector<v1::Chunk>& c) { c.insert(c.begin() + 2, c[1]); }),
                grpc::StatusCode::INVALID_ARGUMENT, "repeated", 1, "expected chunk 2 of 5, got chunk 1");
  // Chunks 1 and 2 change places.
  ExpectRefused(push("swapped", [](v1::UpdateHeader&, std::vector<v1::Chunk>& c) { std::swap(c[1], c[2]); }),
                grpc::StatusCode::INVALID_ARGUMENT, "swapped", 1, "expected chunk 1 of 5, got chunk 2");
  // Chunk 2 dropped and chunk 3 relabelled as 2 to hide it: the seal binds the index.
  ExpectRefused(push("renumbered",
                     [](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
                       c.erase(c.begin() + 2);
                       for (size_t i = 2; i < c.size(); ++i) c[i].set_index(static_cast<uint32_t>(i));
                     }),
                grpc::StatusCode::DATA_LOSS, "renumbered", 1, "chunk 2 of 5: sealed chunk");
  // Chunk 3 cut short by 100 bytes.
  ExpectRefused(push("short-chunk",
                     [](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
                       c[3].set_data(c[3].data().substr(0, c[3].data().size() - 100));
                     }),
                grpc::StatusCode::INVALID_ARGUMENT, "short-chunk", 1, "chunk 3: expected 4096 bytes, got 3996");
  // The stream ends after three of five chunks.
  ExpectRefused(push("short-stream", [](v1::UpdateHeader&, std::vector<v1::Chunk>& c) { c.resize(3); }),
                grpc::StatusCode::INVALID_ARGUMENT, "short-stream", 1, "stream ended after 3 of 5 chunks");

  const grpc::Status honest = served.Push("honest", 1, version, Filled(-1.5f), 300);
  ASSERT_TRUE(honest.ok()) << honest.error_message();
  ExpectTheRoundCompletedWithOnly(served, -1.5f, 1);
}

TEST(SealingTest, ChunksReplayedFromThePreviousRoundAreRefused) {
  ServedJob served(SmallJob(/*rounds=*/2, /*per_round=*/2, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  served.Join("a", 100);
  served.Join("honest", 100);
  const uint64_t v1 = PullTrain(served, "a").header.model_version();
  PullTrain(served, "honest");
  ASSERT_TRUE(served.Push("a", 1, v1, Filled(1.0f), 100).ok());
  const std::vector<v1::Chunk> round1 = served.last_sent();
  ASSERT_TRUE(served.Push("honest", 1, v1, Filled(1.0f), 100).ok());

  const Pulled a2 = PullTrain(served, "a");
  ASSERT_EQ(a2.header.round(), 2u);
  const uint64_t v2 = a2.header.model_version();
  PullTrain(served, "honest");
  // A round-2 header carrying a's round-1 chunks, sealed under the same session keys.
  const grpc::Status replayed = served.Push("a", 2, v2, Filled(1.0f), 100,
                                            testing::AfterSealing([&](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
                                              c = round1;
                                            }));
  ExpectRefused(replayed, grpc::StatusCode::DATA_LOSS, "a", 2, "chunk 0 of 5");
  ASSERT_TRUE(served.Push("honest", 2, v2, Filled(3.0f), 100).ok());
  ExpectTheRoundCompletedWithOnly(served, 4.0f, 1);
}

TEST(SealingTest, OneReplayedChunkAmongFreshOnesIsRefusedNamingIt) {
  ServedJob served(SmallJob(/*rounds=*/2, /*per_round=*/2, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  served.Join("a", 100);
  served.Join("honest", 100);
  const uint64_t v1 = PullTrain(served, "a").header.model_version();
  PullTrain(served, "honest");
  ASSERT_TRUE(served.Push("a", 1, v1, Filled(1.0f), 100).ok());
  const v1::Chunk old_chunk3 = served.last_sent()[3];
  ASSERT_TRUE(served.Push("honest", 1, v1, Filled(1.0f), 100).ok());
  const uint64_t v2 = PullTrain(served, "a").header.model_version();
  PullTrain(served, "honest");
  const grpc::Status s = served.Push("a", 2, v2, Filled(1.0f), 100,
                                     testing::AfterSealing([&](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
                                       c[3] = old_chunk3;
                                     }));
  ExpectRefused(s, grpc::StatusCode::DATA_LOSS, "a", 2, "chunk 3 of 5");
  ASSERT_TRUE(served.Push("honest", 2, v2, Filled(2.0f), 100).ok());
  ExpectTheRoundCompletedWithOnly(served, 3.0f, 1);
}

TEST(SealingTest, ChunksSealedUnderAnotherClientsKeyOrNameOrReflectedFromTheServerAreRefused) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/4, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  for (const char* site : {"a", "b", "c", "honest"}) served.Join(site, 100);
  std::map<std::string, Pulled> tasks;
  for (const char* site : {"a", "b", "c", "honest"}) tasks[site] = PullTrain(served, site);
  const uint64_t version = tasks["honest"].header.model_version();

  // b streams under a's name (plaintext transport: names are claimed) with its own keys.
  ExpectRefused(served.Push("a", 1, version, Filled(9.0f), 100, testing::SealedWith(served.session("b"))),
                grpc::StatusCode::DATA_LOSS, "a", 1, "chunk 0 of 5");

  // b's own key, but a context that names c: the name is bound into the seal.
  {
    testing::SiteKeys& keys = served.keys("b");
    absl::StatusOr<crypto::UpdateKeys> derived =
        crypto::DeriveUpdateKeys(keys.own, keys.server_public, crypto::Side::kClient, {"test-job", "b"});
    ASSERT_TRUE(derived.ok()) << derived.status();
    absl::StatusOr<crypto::ChunkSealer> sealer = crypto::ChunkSealer::Create(derived->send_key);
    ASSERT_TRUE(sealer.ok());
    const grpc::Status s = served.Push(
        "b", 1, version, Filled(9.0f), 100, testing::AfterSealing([&](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
          const std::vector<float> values = Filled(9.0f);
          const auto bytes = std::as_bytes(std::span(values));
          for (v1::Chunk& chunk : c) {
            const auto piece = core::ChunkOf(bytes, chunk.index(), kSmallChunkBytes);
            crypto::ChunkContext context{"test-job", 1, "c", chunk.index(), chunk.count(), version,
                                         crypto::Direction::kToServer};
            absl::StatusOr<std::vector<uint8_t>> sealed = sealer->SealChunk(
                context, {reinterpret_cast<const uint8_t*>(piece.data()), piece.size()});
            ASSERT_TRUE(sealed.ok());
            chunk.set_data(reinterpret_cast<const char*>(sealed->data()), sealed->size());
          }
        }));
    ExpectRefused(s, grpc::StatusCode::DATA_LOSS, "b", 1, "chunk 0 of 5");
  }

  // c sends back the sealed global model it downloaded (the other direction's key and context).
  ExpectRefused(served.Push("c", 1, version, Filled(0.0f), 100,
                            testing::AfterSealing([&](v1::UpdateHeader&, std::vector<v1::Chunk>& c) {
                              c = tasks["c"].sealed;
                            })),
                grpc::StatusCode::DATA_LOSS, "c", 1, "chunk 0 of 5");

  ASSERT_TRUE(served.Push("honest", 1, version, Filled(0.5f), 100).ok());
  ExpectTheRoundCompletedWithOnly(served, 0.5f, 1);
}

TEST(SealingTest, TheSpoolFileHoldsOnlySealedChunksUntilTheFoldOpensThem) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/30));
  served.Join("a", 100);
  served.Join("b", 100);
  const uint64_t version = PullTrain(served, "a").header.model_version();
  PullTrain(served, "b");
  const float kPattern = 1.2345f;
  ASSERT_TRUE(served.Push("a", 1, version, Filled(kPattern), 100).ok());

  // The round waits for b, so a's update rests in the spool.
  const std::filesystem::path spool = served.out_dir() / "spool" / "round-1-a.update";
  ASSERT_TRUE(std::filesystem::exists(spool));
  std::ifstream in(spool, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(file.size(), kSmallFloats * sizeof(float) + kSmallChunks * crypto::kSealOverhead);
  const std::vector<float> pattern(4, kPattern);
  EXPECT_EQ(file.find(std::string(reinterpret_cast<const char*>(pattern.data()), 4 * sizeof(float))),
            std::string::npos)
      << "four plaintext floats of the update found in its spool file";
  std::string sent;
  for (const v1::Chunk& c : served.last_sent()) sent += c.data();
  EXPECT_TRUE(file == sent) << "the spool file is not the sealed chunks as received";

  ASSERT_TRUE(served.Push("b", 1, version, Filled(kPattern), 100).ok());
  ExpectTheRoundCompletedWithOnly(served, kPattern, 2);
}

TEST(SealingTest, TheGlobalModelIsSealedForEachClientAlone) {
  core::ParameterSet initial(testing::SmallManifest());
  for (float& v : initial.floats()) v = 2.5f;
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/30),
                   std::move(initial));
  served.Join("a", 100);
  served.Join("b", 100);
  const Pulled a = PullTrain(served, "a");
  ASSERT_EQ(a.model.size(), kSmallFloats);
  for (float v : a.model) ASSERT_EQ(v, 2.5f);
  ASSERT_EQ(a.sealed.size(), kSmallChunks);
  EXPECT_EQ(a.sealed[0].data().size(), kSmallChunkBytes + crypto::kSealOverhead);
  const std::vector<float> pattern(4, 2.5f);
  for (const v1::Chunk& c : a.sealed) {
    EXPECT_EQ(c.data().find(std::string(reinterpret_cast<const char*>(pattern.data()), 16)), std::string::npos)
        << "plaintext on the wire in chunk " << c.index();
  }
  // b's session cannot open what was sealed for a.
  const Pulled b_reading_as_a = served.Pull("b", 1000, served.session("a"));
  EXPECT_EQ(b_reading_as_a.opened.code(), absl::StatusCode::kDataLoss) << b_reading_as_a.opened;
  EXPECT_THAT(std::string(b_reading_as_a.opened.message()), HasSubstr("chunk 0 of 5"));
}

TEST(SealingTest, AJoinWithoutAUsableKeyIsRefusedAndTheClientIsNotRegistered) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/1, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  const std::string none;
  grpc::Status s = served.TryJoin("keyless", 10, &none);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("join of keyless to job test-job"));
  EXPECT_THAT(s.error_message(), HasSubstr("client_public_key: expected a 32-byte X25519 public key, got 0 bytes"));

  // The all-zero point would force a known shared secret.
  const std::string zero(32, '\0');
  s = served.TryJoin("low-order", 10, &zero);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("low-order point"));

  for (const JobStatus::Client& c : served.job().Status().clients) {
    EXPECT_NE(c.client_id, "keyless");
    EXPECT_NE(c.client_id, "low-order");
  }
}

TEST(SealingTest, ARejoinAgreesNewKeysAndRetiresTheOldOnes) {
  ServedJob served(SmallJob(/*rounds=*/1, /*per_round=*/1, /*min_clients=*/1, /*heartbeat_timeout_s=*/30));
  served.Join("a", 100);
  const std::shared_ptr<wire::SealedSession> old_session = served.session("a");
  served.Join("a", 100);  // a restarted client: a fresh key pair
  ASSERT_NE(served.session("a"), old_session);
  const Pulled with_old = served.Pull("a", 5000, old_session);
  ASSERT_EQ(with_old.header.kind(), TaskHeader::TRAIN);
  EXPECT_EQ(with_old.opened.code(), absl::StatusCode::kDataLoss) << "the old session still opens the model";
  const Pulled with_new = PullTrain(served, "a");
  // An update sealed under the old session no longer opens either.
  ExpectRefused(served.Push("a", 1, with_new.header.model_version(), Filled(1.0f), 100, testing::SealedWith(old_session)),
                grpc::StatusCode::DATA_LOSS, "a", 1, "chunk 0 of 5");
}

}  // namespace
}  // namespace cohort::server
