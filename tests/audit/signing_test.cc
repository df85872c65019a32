#include "crypto/signing.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/audit/test_util.h"

namespace cohort::crypto {
namespace {

using audit::testing::ReadFile;
using audit::testing::TempDir;
using audit::testing::WriteFile;

std::vector<std::uint8_t> Unhex(const std::string& hex) {
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<std::uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

std::string AsString(const std::vector<std::uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

struct Rfc8032Vector {
  const char* seed;
  const char* public_key;
  const char* message;
  const char* signature;
};

// RFC 8032 section 7.1, TEST 1, TEST 2 and TEST 3.
constexpr Rfc8032Vector kRfc8032Vectors[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
     "b46bd25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f1"
     "1d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984d"
     "c6594a7c15e9716ed28dc027beceea1ec40a"},
};

TEST(SigningTest, Rfc8032VectorsGiveThePublishedKeysAndSignatures) {
  for (const Rfc8032Vector& v : kRfc8032Vectors) {
    absl::StatusOr<SigningKey> key = SigningKey::FromSeed(Unhex(v.seed));
    ASSERT_TRUE(key.ok()) << key.status();
    EXPECT_EQ(key->public_key().ToHex(), v.public_key);
    const Signature signature = key->Sign(AsString(Unhex(v.message)));
    EXPECT_EQ(SignatureToHex(signature), v.signature);
    EXPECT_TRUE(key->public_key().Verify(AsString(Unhex(v.message)), signature));
  }
}

TEST(SigningTest, AllPublishedEd25519VectorsSignAndVerify) {
  const std::filesystem::path vectors =
      "/usr/lib/python3/dist-packages/cryptography_vectors/asymmetric/Ed25519/sign.input";
  if (!std::filesystem::exists(vectors)) {
    GTEST_SKIP() << vectors << " is missing: install python3-cryptography-vectors";
  }
  std::ifstream in(vectors);
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    // secret key (seed || public key) : public key : message : signature || message :
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (std::size_t colon; (colon = line.find(':', start)) != std::string::npos;
         start = colon + 1) {
      fields.push_back(line.substr(start, colon - start));
    }
    ASSERT_EQ(fields.size(), 4u) << line;
    absl::StatusOr<SigningKey> key = SigningKey::FromSeed(Unhex(fields[0].substr(0, 64)));
    ASSERT_TRUE(key.ok()) << key.status();
    ASSERT_EQ(key->public_key().ToHex(), fields[1]);
    const std::string message = AsString(Unhex(fields[2]));
    const Signature signature = key->Sign(message);
    ASSERT_EQ(SignatureToHex(signature), fields[3].substr(0, 128)) << "vector " << checked;
    ASSERT_TRUE(key->public_key().Verify(message, signature));
    ++checked;
  }
  EXPECT_EQ(checked, 1024);
}

TEST(SigningTest, VerifyRejectsAChangedMessageSignatureOrKey) {
  const SigningKey key = SigningKey::Generate();
  const SigningKey other = SigningKey::Generate();
  const std::string message = "param.set rounds 10 -> 20";
  Signature signature = key.Sign(message);
  ASSERT_TRUE(key.public_key().Verify(message, signature));

  EXPECT_FALSE(key.public_key().Verify("param.set rounds 10 -> 21", signature));
  EXPECT_FALSE(other.public_key().Verify(message, signature));
  signature[10] ^= 0x01;
  EXPECT_FALSE(key.public_key().Verify(message, signature));
}

TEST(SigningTest, GeneratedKeysAreDistinct) {
  EXPECT_NE(SigningKey::Generate().public_key(), SigningKey::Generate().public_key());
}

TEST(SigningTest, AMovedFromKeyNoLongerHoldsTheSecret) {
  SigningKey key = SigningKey::Generate();
  const SigningPublicKey public_key = key.public_key();
  SigningKey moved = std::move(key);
  EXPECT_TRUE(public_key.Verify("m", moved.Sign("m")));
  // The moved-from object's secret bytes were wiped, so it cannot sign for the key.
  EXPECT_FALSE(public_key.Verify("m", key.Sign("m")));  // NOLINT(bugprone-use-after-move)
}

TEST(SigningTest, HexFormsRoundTripAndRejectWrongLengthsOrDigits) {
  const SigningKey key = SigningKey::Generate();
  absl::StatusOr<SigningPublicKey> parsed = SigningPublicKey::FromHex(key.public_key().ToHex());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, key.public_key());

  absl::StatusOr<SigningPublicKey> short_key = SigningPublicKey::FromHex("abcd");
  EXPECT_EQ(short_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_key.status().message().find("expected 64 hex characters, got 4"),
            std::string::npos)
      << short_key.status();
  EXPECT_FALSE(SigningPublicKey::FromHex(std::string(63, '0') + "g").ok());

  const Signature signature = key.Sign("x");
  absl::StatusOr<Signature> round_trip = SignatureFromHex(SignatureToHex(signature));
  ASSERT_TRUE(round_trip.ok());
  EXPECT_EQ(*round_trip, signature);
  EXPECT_FALSE(SignatureFromHex("00").ok());
}

TEST(SigningTest, PrivateKeyFileIsMode0600AndReadsBackTheSameKey) {
  TempDir dir;
  const SigningKey key = SigningKey::Generate();
  ASSERT_TRUE(WriteSigningKeyFile(dir / "audit.key", key).ok());

  struct stat info;
  ASSERT_EQ(::stat((dir / "audit.key").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u);
  // One line of hex, and no temporary file left behind.
  EXPECT_EQ(ReadFile(dir / "audit.key").size(), 65u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);

  absl::StatusOr<SigningKey> read = ReadSigningKeyFile(dir / "audit.key");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->public_key(), key.public_key());
  EXPECT_TRUE(key.public_key().Verify("m", read->Sign("m")));
}

TEST(SigningTest, KeyFilesAreNeverOverwritten) {
  TempDir dir;
  const SigningKey first = SigningKey::Generate();
  ASSERT_TRUE(WriteSigningKeyFile(dir / "audit.key", first).ok());
  ASSERT_TRUE(WritePublicKeyFile(dir / "audit.pub", first.public_key()).ok());
  const std::string key_before = ReadFile(dir / "audit.key");

  const SigningKey second = SigningKey::Generate();
  absl::Status status = WriteSigningKeyFile(dir / "audit.key", second);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_NE(status.message().find("audit.key"), std::string::npos) << status;
  EXPECT_EQ(WritePublicKeyFile(dir / "audit.pub", second.public_key()).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(dir / "audit.key"), key_before);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            2);
}

TEST(SigningTest, APrivateKeyFileOthersCanReadIsRefused) {
  TempDir dir;
  ASSERT_TRUE(WriteSigningKeyFile(dir / "audit.key", SigningKey::Generate()).ok());
  ASSERT_EQ(::chmod((dir / "audit.key").c_str(), 0640), 0);
  absl::StatusOr<SigningKey> key = ReadSigningKeyFile(dir / "audit.key");
  EXPECT_EQ(key.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(key.status().message().find("0640"), std::string::npos) << key.status();
  EXPECT_NE(key.status().message().find((dir / "audit.key").string()), std::string::npos);
}

TEST(SigningTest, PublicKeyFileIsOneLineOfHex) {
  TempDir dir;
  const SigningKey key = SigningKey::Generate();
  ASSERT_TRUE(WritePublicKeyFile(dir / "audit.pub", key.public_key()).ok());
  EXPECT_EQ(ReadFile(dir / "audit.pub"), key.public_key().ToHex() + "\n");
  absl::StatusOr<SigningPublicKey> read = ReadPublicKeyFile(dir / "audit.pub");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, key.public_key());

  // Hand-edited files with other whitespace or upper case still read.
  WriteFile(dir / "upper.pub", "  " + key.public_key().ToHex() + "\r\n\n");
  EXPECT_TRUE(ReadPublicKeyFile(dir / "upper.pub").ok());
}

TEST(SigningTest, ReadErrorsNameTheFileAndWhatWasExpected) {
  TempDir dir;
  absl::StatusOr<SigningPublicKey> missing = ReadPublicKeyFile(dir / "nope.pub");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.pub"), std::string::npos);

  WriteFile(dir / "bad.pub", "not a key\n");
  absl::StatusOr<SigningPublicKey> bad = ReadPublicKeyFile(dir / "bad.pub");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bad.pub"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("expected 64 hex characters"), std::string::npos)
      << bad.status();

  WriteFile(dir / "bad.key", std::string(63, '1') + "z\n");
  ASSERT_EQ(::chmod((dir / "bad.key").c_str(), 0600), 0);
  absl::StatusOr<SigningKey> bad_key = ReadSigningKeyFile(dir / "bad.key");
  EXPECT_EQ(bad_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_key.status().message().find("bad.key: expected one line of 64 hex characters"),
            std::string::npos)
      << bad_key.status();

  WriteFile(dir / "huge.pub", std::string(10000, 'a'));
  EXPECT_EQ(ReadPublicKeyFile(dir / "huge.pub").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cohort::crypto
