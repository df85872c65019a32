#include "crypto/aes_gcm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tests/crypto/vector_file.h"

namespace cohort::crypto {
namespace {

using testing::HexToBytes;
using testing::LoadVectorFile;
using testing::VectorRecord;

// Our code supports exactly the 96-bit nonce and 128-bit tag; every such case of the
// CAVP files goes through it.
bool IsSupportedCase(const VectorRecord& r) {
  return r.section.count("IVlen") && r.section.at("IVlen") == "96" &&
         r.section.count("Taglen") && r.section.at("Taglen") == "128" &&
         r.section.count("Keylen") && r.section.at("Keylen") == "256";
}

TEST(Aes256GcmTest, EncryptMatchesEveryNistCavpCaseWith96BitNonceAnd128BitTag) {
  auto records = LoadVectorFile("ciphers/AES/GCM/gcmEncryptExtIV256.rsp");
  ASSERT_TRUE(records.ok()) << records.status();
  int cases = 0;
  for (const VectorRecord& r : *records) {
    if (!IsSupportedCase(r)) continue;
    ++cases;
    const auto key = HexToBytes(r.Field("Key"));
    const auto nonce = HexToBytes(r.Field("IV"));
    const auto plaintext = HexToBytes(r.Field("PT"));
    const auto aad = HexToBytes(r.Field("AAD"));
    auto aead = Aes256Gcm::Create(key);
    ASSERT_TRUE(aead.ok()) << aead.status();
    std::vector<std::uint8_t> ciphertext(plaintext.size());
    std::vector<std::uint8_t> tag(Aes256Gcm::kTagSize);
    ASSERT_TRUE(aead->Encrypt(nonce, aad, plaintext, ciphertext, tag).ok()) << "line " << r.line;
    EXPECT_EQ(ciphertext, HexToBytes(r.Field("CT"))) << "ciphertext, case at line " << r.line;
    EXPECT_EQ(tag, HexToBytes(r.Field("Tag"))) << "tag, case at line " << r.line;
  }
  // 5 plaintext lengths x 5 AAD lengths x 15 cases in the 96-bit/128-bit groups.
  EXPECT_EQ(cases, 375);
}

TEST(Aes256GcmTest, DecryptAcceptsEveryNistPassCaseAndRejectsEveryFailCase) {
  auto records = LoadVectorFile("ciphers/AES/GCM/gcmDecrypt256.rsp");
  ASSERT_TRUE(records.ok()) << records.status();
  int passes = 0;
  int failures = 0;
  for (const VectorRecord& r : *records) {
    if (!IsSupportedCase(r)) continue;
    const auto ciphertext = HexToBytes(r.Field("CT"));
    auto aead = Aes256Gcm::Create(HexToBytes(r.Field("Key")));
    ASSERT_TRUE(aead.ok()) << aead.status();
    std::vector<std::uint8_t> plaintext(ciphertext.size(), 0xAA);
    const absl::Status status = aead->Decrypt(HexToBytes(r.Field("IV")), HexToBytes(r.Field("AAD")),
                                              ciphertext, HexToBytes(r.Field("Tag")), plaintext);
    if (r.fail) {
      ++failures;
      EXPECT_TRUE(absl::IsDataLoss(status)) << "case at line " << r.line << ": " << status;
      EXPECT_TRUE(std::all_of(plaintext.begin(), plaintext.end(), [](auto b) { return b == 0; }))
          << "unauthenticated plaintext left in the buffer, case at line " << r.line;
    } else {
      ++passes;
      EXPECT_TRUE(status.ok()) << "case at line " << r.line << ": " << status;
      EXPECT_EQ(plaintext, HexToBytes(r.Field("PT"))) << "case at line " << r.line;
    }
  }
  EXPECT_EQ(passes + failures, 375);
  EXPECT_GT(failures, 0);
  EXPECT_GT(passes, 0);
}

TEST(Aes256GcmTest, OneObjectSealsAndOpensManyMessagesLikeFreshObjects) {
  const std::vector<std::uint8_t> key(32, 0x42);
  auto reused = Aes256Gcm::Create(key);
  ASSERT_TRUE(reused.ok());
  for (int i = 0; i < 20; ++i) {
    const std::vector<std::uint8_t> nonce(12, static_cast<std::uint8_t>(i));
    const std::vector<std::uint8_t> aad(i, 0x07);
    std::vector<std::uint8_t> message(37 * i + 1);
    for (std::size_t j = 0; j < message.size(); ++j) message[j] = static_cast<std::uint8_t>(i + j);

    std::vector<std::uint8_t> ct(message.size()), tag(16);
    ASSERT_TRUE(reused->Encrypt(nonce, aad, message, ct, tag).ok());

    auto fresh = Aes256Gcm::Create(key);
    ASSERT_TRUE(fresh.ok());
    std::vector<std::uint8_t> fresh_ct(message.size()), fresh_tag(16);
    ASSERT_TRUE(fresh->Encrypt(nonce, aad, message, fresh_ct, fresh_tag).ok());
    EXPECT_EQ(ct, fresh_ct) << "message " << i;
    EXPECT_EQ(tag, fresh_tag) << "message " << i;

    std::vector<std::uint8_t> opened(message.size());
    ASSERT_TRUE(reused->Decrypt(nonce, aad, ct, tag, opened).ok()) << "message " << i;
    EXPECT_EQ(opened, message);
  }
}

TEST(Aes256GcmTest, EncryptsInPlace) {
  auto aead = Aes256Gcm::Create(std::vector<std::uint8_t>(32, 1));
  ASSERT_TRUE(aead.ok());
  const std::vector<std::uint8_t> nonce(12, 2);
  const std::vector<std::uint8_t> message(100, 3);
  std::vector<std::uint8_t> buffer = message;
  std::vector<std::uint8_t> tag(16);
  ASSERT_TRUE(aead->Encrypt(nonce, {}, buffer, buffer, tag).ok());
  EXPECT_NE(buffer, message);
  ASSERT_TRUE(aead->Decrypt(nonce, {}, buffer, tag, buffer).ok());
  EXPECT_EQ(buffer, message);
}

TEST(Aes256GcmTest, RejectsKeyNonceAndBufferOfTheWrongSize) {
  EXPECT_TRUE(absl::IsInvalidArgument(Aes256Gcm::Create(std::vector<std::uint8_t>(16)).status()));
  auto aead = Aes256Gcm::Create(std::vector<std::uint8_t>(32));
  ASSERT_TRUE(aead.ok());
  std::vector<std::uint8_t> message(8), ct(8), tag(16), short_ct(7), short_tag(12);
  const absl::Status bad_nonce =
      aead->Encrypt(std::vector<std::uint8_t>(16), {}, message, ct, tag);
  EXPECT_TRUE(absl::IsInvalidArgument(bad_nonce));
  EXPECT_NE(bad_nonce.message().find("nonce"), std::string::npos) << bad_nonce;
  EXPECT_TRUE(absl::IsInvalidArgument(
      aead->Encrypt(std::vector<std::uint8_t>(12), {}, message, short_ct, tag)));
  EXPECT_TRUE(absl::IsInvalidArgument(
      aead->Encrypt(std::vector<std::uint8_t>(12), {}, message, ct, short_tag)));
}

}  // namespace
}  // namespace cohort::crypto
