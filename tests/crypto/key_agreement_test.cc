#include "crypto/key_agreement.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/crypto/vector_file.h"

namespace cohort::crypto {
namespace {

using testing::BytesToHex;
using testing::HexToBytes;
using testing::LoadVectorFile;

X25519PublicKey PublicKeyFromHex(const std::string& hex) {
  const auto bytes = HexToBytes(hex);
  X25519PublicKey key{};
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

TEST(X25519Test, MatchesEveryRfc7748FunctionVector) {
  auto records = LoadVectorFile("asymmetric/X25519/rfc7748.txt");
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 3u);
  for (const auto& r : *records) {
    auto out = X25519(HexToBytes(r.Field("INPUT_SCALAR")), HexToBytes(r.Field("INPUT_U")));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(BytesToHex(out->span()), r.Field("OUTPUT_U")) << "case at line " << r.line;
  }
}

// RFC 7748 section 5.2: k = u = 9, then repeatedly (k, u) = (X25519(k, u), k).
TEST(X25519Test, MatchesTheRfc7748IteratedVectorAfter1000Iterations) {
  std::vector<std::uint8_t> k(32, 0), u(32, 0);
  k[0] = 9;
  u[0] = 9;
  for (int i = 1; i <= 1000; ++i) {
    auto out = X25519(k, u);
    ASSERT_TRUE(out.ok()) << out.status();
    u = k;
    k.assign(out->span().begin(), out->span().end());
    if (i == 1) {
      EXPECT_EQ(BytesToHex(k), "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
    }
  }
  EXPECT_EQ(BytesToHex(k), "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
}

// RFC 7748 section 6.1: Alice and Bob's key pairs and their shared secret.
TEST(X25519Test, DerivesTheRfc7748DiffieHellmanKeysAndSharedSecret) {
  auto alice = X25519KeyPairFromSecret(
      HexToBytes("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  auto bob = X25519KeyPairFromSecret(
      HexToBytes("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
  ASSERT_TRUE(alice.ok() && bob.ok());
  EXPECT_EQ(BytesToHex(alice->public_key),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(BytesToHex(bob->public_key),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  auto shared_a = X25519(alice->secret_key.span(), bob->public_key);
  auto shared_b = X25519(bob->secret_key.span(), alice->public_key);
  ASSERT_TRUE(shared_a.ok() && shared_b.ok());
  EXPECT_EQ(BytesToHex(shared_a->span()),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
  EXPECT_TRUE(shared_a->ConstantTimeEquals(*shared_b));
}

TEST(X25519Test, RejectsInputsThatAreNot32Bytes) {
  EXPECT_TRUE(absl::IsInvalidArgument(
      X25519(std::vector<std::uint8_t>(31), std::vector<std::uint8_t>(32)).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      X25519KeyPairFromSecret(std::vector<std::uint8_t>(33)).status()));
}

const UpdateKeyContext kContext{"job-7", "site-a"};

TEST(DeriveUpdateKeysTest, ClientSendKeyIsServerReceiveKeyAndTheOtherWayAround) {
  const X25519KeyPair client = GenerateX25519KeyPair();
  const X25519KeyPair server = GenerateX25519KeyPair();
  auto client_keys = DeriveUpdateKeys(client, server.public_key, Side::kClient, kContext);
  auto server_keys = DeriveUpdateKeys(server, client.public_key, Side::kServer, kContext);
  ASSERT_TRUE(client_keys.ok()) << client_keys.status();
  ASSERT_TRUE(server_keys.ok()) << server_keys.status();
  EXPECT_EQ(client_keys->send_key.size(), kUpdateKeySize);
  EXPECT_TRUE(client_keys->send_key.ConstantTimeEquals(server_keys->receive_key));
  EXPECT_TRUE(client_keys->receive_key.ConstantTimeEquals(server_keys->send_key));
  EXPECT_FALSE(client_keys->send_key.ConstantTimeEquals(client_keys->receive_key));
}

TEST(DeriveUpdateKeysTest, KeysDependOnTheJobAndTheClientName) {
  const X25519KeyPair client = GenerateX25519KeyPair();
  const X25519KeyPair server = GenerateX25519KeyPair();
  auto base = DeriveUpdateKeys(client, server.public_key, Side::kClient, kContext);
  auto other_job =
      DeriveUpdateKeys(client, server.public_key, Side::kClient, {"job-8", "site-a"});
  auto other_client =
      DeriveUpdateKeys(client, server.public_key, Side::kClient, {"job-7", "site-b"});
  ASSERT_TRUE(base.ok() && other_job.ok() && other_client.ok());
  EXPECT_FALSE(base->send_key.ConstantTimeEquals(other_job->send_key));
  EXPECT_FALSE(base->send_key.ConstantTimeEquals(other_client->send_key));
}

TEST(DeriveUpdateKeysTest, APeerThatSubstitutesItsOwnPublicKeyGetsDifferentKeys) {
  const X25519KeyPair client = GenerateX25519KeyPair();
  const X25519KeyPair server = GenerateX25519KeyPair();
  const X25519KeyPair intruder = GenerateX25519KeyPair();
  auto client_keys = DeriveUpdateKeys(client, intruder.public_key, Side::kClient, kContext);
  auto server_keys = DeriveUpdateKeys(server, client.public_key, Side::kServer, kContext);
  ASSERT_TRUE(client_keys.ok() && server_keys.ok());
  EXPECT_FALSE(client_keys->send_key.ConstantTimeEquals(server_keys->receive_key));
}

TEST(DeriveUpdateKeysTest, RejectsLowOrderPeerPublicKeys) {
  const X25519KeyPair client = GenerateX25519KeyPair();
  // u = 0, u = 1, and a point of order 8 (from the curve25519 small-order list).
  for (const std::string hex :
       {"0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"}) {
    auto keys = DeriveUpdateKeys(client, PublicKeyFromHex(hex), Side::kClient, kContext);
    ASSERT_FALSE(keys.ok()) << "peer key " << hex;
    EXPECT_TRUE(absl::IsFailedPrecondition(keys.status())) << keys.status();
    EXPECT_NE(keys.status().message().find("low-order"), std::string::npos) << keys.status();
  }
}

TEST(DeriveUpdateKeysTest, RejectsAnEmptyOrOverlongContextName) {
  const X25519KeyPair client = GenerateX25519KeyPair();
  const X25519KeyPair server = GenerateX25519KeyPair();
  EXPECT_TRUE(absl::IsInvalidArgument(
      DeriveUpdateKeys(client, server.public_key, Side::kClient, {"", "site-a"}).status()));
  const std::string long_name(256, 'x');
  auto overlong = DeriveUpdateKeys(client, server.public_key, Side::kClient, {"job", long_name});
  EXPECT_TRUE(absl::IsInvalidArgument(overlong.status()));
  EXPECT_NE(overlong.status().message().find("client_id"), std::string::npos);
}

TEST(GenerateX25519KeyPairTest, PublicKeyMatchesTheSecretKeyAndPairsDiffer) {
  const X25519KeyPair a = GenerateX25519KeyPair();
  const X25519KeyPair b = GenerateX25519KeyPair();
  auto rebuilt = X25519KeyPairFromSecret(a.secret_key.span());
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(rebuilt->public_key, a.public_key);
  EXPECT_NE(a.public_key, b.public_key);
}

}  // namespace
}  // namespace cohort::crypto
