#include "crypto/hkdf.h"

#include <gtest/gtest.h>

#include "tests/crypto/vector_file.h"

namespace cohort::crypto {
namespace {

using testing::BytesToHex;
using testing::HexToBytes;
using testing::LoadVectorFile;

TEST(HkdfTest, MatchesEveryRfc5869Sha256Vector) {
  auto records = LoadVectorFile("KDF/rfc-5869-HKDF-SHA256.txt");
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 3u);
  for (const auto& r : *records) {
    ASSERT_EQ(r.Field("Hash"), "SHA-256");
    const auto ikm = HexToBytes(r.Field("IKM"));
    const auto salt = HexToBytes(r.Field("salt"));
    const auto info = HexToBytes(r.Field("info"));
    const std::size_t length = std::stoul(r.Field("L"));

    auto okm = HkdfSha256(ikm, salt, info, length);
    ASSERT_TRUE(okm.ok()) << okm.status();
    EXPECT_EQ(BytesToHex(okm->span()), r.Field("OKM")) << "case at line " << r.line;

    auto prk = HkdfSha256Extract(ikm, salt);
    ASSERT_TRUE(prk.ok()) << prk.status();
    EXPECT_EQ(BytesToHex(prk->span()), r.Field("PRK")) << "case at line " << r.line;

    auto expanded = HkdfSha256Expand(prk->span(), info, length);
    ASSERT_TRUE(expanded.ok()) << expanded.status();
    EXPECT_EQ(BytesToHex(expanded->span()), r.Field("OKM")) << "case at line " << r.line;
  }
}

TEST(HkdfTest, RejectsEmptyInputAndOutputLengthsOutsideTheRfcRange) {
  const std::vector<std::uint8_t> ikm(32, 1);
  EXPECT_TRUE(absl::IsInvalidArgument(HkdfSha256({}, {}, {}, 32).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(HkdfSha256(ikm, {}, {}, 0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(HkdfSha256(ikm, {}, {}, 255 * 32 + 1).status()));
  EXPECT_TRUE(HkdfSha256(ikm, {}, {}, 255 * 32).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(HkdfSha256Expand(std::vector<std::uint8_t>(16), {}, 32).status()));
}

}  // namespace
}  // namespace cohort::crypto
