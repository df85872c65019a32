#include "crypto/seal.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "crypto/key_agreement.h"
#include "tests/crypto/vector_file.h"

namespace cohort::crypto {
namespace {

using testing::BytesToHex;

// A client and a server that agreed keys for job-1 / site-a.
class SealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const X25519KeyPair client = GenerateX25519KeyPair();
    const X25519KeyPair server = GenerateX25519KeyPair();
    auto client_keys = DeriveUpdateKeys(client, server.public_key, Side::kClient, {"job-1", "site-a"});
    auto server_keys = DeriveUpdateKeys(server, client.public_key, Side::kServer, {"job-1", "site-a"});
    ASSERT_TRUE(client_keys.ok() && server_keys.ok());
    client_keys_ = std::move(*client_keys);
    server_keys_ = std::move(*server_keys);
    for (std::size_t i = 0; i < chunk_.size(); ++i) chunk_[i] = static_cast<std::uint8_t>(i * 7);
  }

  static ChunkContext Context(std::uint32_t index = 2) {
    return ChunkContext{.job_id = "job-1",
                        .round = 5,
                        .client_id = "site-a",
                        .chunk_index = index,
                        .chunk_count = 4,
                        .model_version = 11,
                        .direction = Direction::kToServer};
  }

  // Seals chunk_ as the client (client -> server key) under `context`.
  std::vector<std::uint8_t> SealAsClient(const ChunkContext& context) {
    auto sealer = ChunkSealer::Create(client_keys_.send_key);
    EXPECT_TRUE(sealer.ok());
    auto sealed = sealer->SealChunk(context, chunk_);
    EXPECT_TRUE(sealed.ok()) << sealed.status();
    return *sealed;
  }

  // Opens as the server; returns the status and checks no plaintext leaks on failure.
  absl::Status OpenAsServer(const ChunkContext& context, const std::vector<std::uint8_t>& sealed) {
    auto opener = ChunkOpener::Create(server_keys_.receive_key);
    EXPECT_TRUE(opener.ok());
    if (sealed.size() < kSealOverhead) return opener->OpenChunk(context, sealed).status();
    std::vector<std::uint8_t> plaintext(sealed.size() - kSealOverhead, 0xAA);
    absl::Status status = opener->OpenChunk(context, sealed, plaintext);
    if (status.ok()) {
      EXPECT_EQ(plaintext, chunk_);
    } else {
      EXPECT_TRUE(std::all_of(plaintext.begin(), plaintext.end(), [](auto b) { return b == 0; }))
          << "a failed open left bytes in the output buffer";
    }
    // Opened where it lies (as the server receives), the verdict and the bytes agree.
    std::vector<std::uint8_t> in_place = sealed;
    absl::StatusOr<std::span<std::uint8_t>> opened = opener->OpenChunkInPlace(context, in_place);
    EXPECT_EQ(opened.status().code(), status.code()) << opened.status();
    const std::span<std::uint8_t> ciphertext = std::span(in_place).subspan(kSealNonceSize, plaintext.size());
    if (opened.ok()) {
      EXPECT_EQ(opened->data(), ciphertext.data());
      EXPECT_TRUE(std::equal(opened->begin(), opened->end(), chunk_.begin(), chunk_.end()));
    } else {
      EXPECT_TRUE(std::all_of(ciphertext.begin(), ciphertext.end(), [](auto b) { return b == 0; }))
          << "a failed open in place left decrypted bytes behind";
    }
    return status;
  }

  static void ExpectAuthenticationFailure(const absl::Status& status) {
    EXPECT_TRUE(absl::IsDataLoss(status)) << status;
    EXPECT_NE(status.message().find("authentication failed"), std::string::npos) << status;
  }

  UpdateKeys client_keys_;
  UpdateKeys server_keys_;
  std::vector<std::uint8_t> chunk_ = std::vector<std::uint8_t>(1000);
};

TEST_F(SealTest, ServerOpensWhatTheClientSealedInTheSameContext) {
  const auto sealed = SealAsClient(Context());
  EXPECT_EQ(sealed.size(), SealedSize(chunk_.size()));
  EXPECT_EQ(sealed.size(), chunk_.size() + 28);
  EXPECT_TRUE(OpenAsServer(Context(), sealed).ok());
}

TEST_F(SealTest, SealingTheSameChunkTwiceUsesDifferentNonces) {
  auto sealer = ChunkSealer::Create(client_keys_.send_key);
  ASSERT_TRUE(sealer.ok());
  auto first = sealer->SealChunk(Context(), chunk_);
  auto second = sealer->SealChunk(Context(), chunk_);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE(std::equal(first->begin(), first->begin() + kSealNonceSize, second->begin()));
  EXPECT_NE(*first, *second);
  EXPECT_EQ(sealer->chunks_sealed(), 2u);
}

TEST_F(SealTest, AFlippedBitInTheNonceFailsAuthentication) {
  auto sealed = SealAsClient(Context());
  sealed[3] ^= 0x01;
  ExpectAuthenticationFailure(OpenAsServer(Context(), sealed));
}

TEST_F(SealTest, AFlippedBitInTheCiphertextFailsAuthentication) {
  auto sealed = SealAsClient(Context());
  sealed[kSealNonceSize + 500] ^= 0x80;
  ExpectAuthenticationFailure(OpenAsServer(Context(), sealed));
}

TEST_F(SealTest, AFlippedBitInTheTagFailsAuthentication) {
  auto sealed = SealAsClient(Context());
  sealed.back() ^= 0x10;
  ExpectAuthenticationFailure(OpenAsServer(Context(), sealed));
}

TEST_F(SealTest, ATruncatedChunkFailsAuthentication) {
  auto sealed = SealAsClient(Context());
  sealed.pop_back();
  ExpectAuthenticationFailure(OpenAsServer(Context(), sealed));
  sealed.resize(kSealOverhead - 1);
  EXPECT_TRUE(absl::IsInvalidArgument(OpenAsServer(Context(), sealed)));
}

TEST_F(SealTest, AChunkFromAnotherRoundFailsAuthentication) {
  const auto sealed = SealAsClient(Context());
  ChunkContext replay = Context();
  replay.round = 6;
  ExpectAuthenticationFailure(OpenAsServer(replay, sealed));
}

TEST_F(SealTest, AChunkPresentedUnderAnotherClientsNameFailsAuthentication) {
  const auto sealed = SealAsClient(Context());
  ChunkContext other = Context();
  other.client_id = "site-b";
  ExpectAuthenticationFailure(OpenAsServer(other, sealed));
}

TEST_F(SealTest, AWrongChunkIndexOrCountFailsAuthentication) {
  const auto sealed = SealAsClient(Context(2));
  ExpectAuthenticationFailure(OpenAsServer(Context(1), sealed));
  ChunkContext fewer = Context(2);
  fewer.chunk_count = 3;
  ExpectAuthenticationFailure(OpenAsServer(fewer, sealed));
}

TEST_F(SealTest, SwappedChunksFailAuthentication) {
  const auto chunk0 = SealAsClient(Context(0));
  const auto chunk1 = SealAsClient(Context(1));
  ExpectAuthenticationFailure(OpenAsServer(Context(0), chunk1));
  ExpectAuthenticationFailure(OpenAsServer(Context(1), chunk0));
  EXPECT_TRUE(OpenAsServer(Context(0), chunk0).ok());
  EXPECT_TRUE(OpenAsServer(Context(1), chunk1).ok());
}

TEST_F(SealTest, AnotherModelVersionJobOrDirectionFailsAuthentication) {
  const auto sealed = SealAsClient(Context());
  ChunkContext version = Context();
  version.model_version = 12;
  ExpectAuthenticationFailure(OpenAsServer(version, sealed));
  ChunkContext job = Context();
  job.job_id = "job-2";
  ExpectAuthenticationFailure(OpenAsServer(job, sealed));
  ChunkContext direction = Context();
  direction.direction = Direction::kToClient;
  ExpectAuthenticationFailure(OpenAsServer(direction, sealed));
}

TEST_F(SealTest, TheKeyOfTheOtherDirectionCannotOpenAChunk) {
  const auto sealed = SealAsClient(Context());
  // The client's own receive key (server -> client) and the server's send key.
  for (const SecretBytes* key : {&client_keys_.receive_key, &server_keys_.send_key}) {
    auto opener = ChunkOpener::Create(*key);
    ASSERT_TRUE(opener.ok());
    ExpectAuthenticationFailure(opener->OpenChunk(Context(), sealed).status());
  }
}

TEST_F(SealTest, AnEmptyChunkSealsAndOpens) {
  auto sealer = ChunkSealer::Create(client_keys_.send_key);
  auto opener = ChunkOpener::Create(server_keys_.receive_key);
  ASSERT_TRUE(sealer.ok() && opener.ok());
  auto sealed = sealer->SealChunk(Context(), std::span<const std::uint8_t>());
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->size(), kSealOverhead);
  auto opened = opener->OpenChunk(Context(), *sealed);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_TRUE(opened->empty());
}

TEST_F(SealTest, RejectsAMalformedContextAndOutputBuffersOfTheWrongSize) {
  auto sealer = ChunkSealer::Create(client_keys_.send_key);
  ASSERT_TRUE(sealer.ok());
  ChunkContext past_end = Context();
  past_end.chunk_index = 4;
  const absl::Status status = sealer->SealChunk(past_end, chunk_).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_NE(status.message().find("chunk 4 of 4"), std::string::npos) << status;
  ChunkContext no_job = Context();
  no_job.job_id.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(sealer->SealChunk(no_job, chunk_).status()));
  std::vector<std::uint8_t> too_small(chunk_.size() + kSealOverhead - 1);
  EXPECT_TRUE(absl::IsInvalidArgument(sealer->SealChunk(Context(), chunk_, too_small)));
  EXPECT_TRUE(absl::IsInvalidArgument(ChunkSealer::Create(SecretBytes(16)).status()));
}

TEST(ChunkAadTest, EncodesTheDocumentedByteLayout) {
  const ChunkContext context{.job_id = "jb",
                             .round = 0x0102030405060708,
                             .client_id = "c",
                             .chunk_index = 3,
                             .chunk_count = 9,
                             .model_version = 0x1112,
                             .direction = Direction::kToClient};
  std::vector<std::uint8_t> aad;
  ASSERT_TRUE(AppendChunkAad(context, aad).ok());
  EXPECT_EQ(BytesToHex(aad),
            "4348525443484b31"   // "CHRTCHK1"
            "02"                 // to_client
            "0102030405060708"   // round
            "0000000000001112"   // model_version
            "00000003"           // chunk_index
            "00000009"           // chunk_count
            "0002" "6a62"        // job_id "jb"
            "0001" "63");        // client_id "c"
}

}  // namespace
}  // namespace cohort::crypto
