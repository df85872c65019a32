// HMAC-SHA256 against RFC 4231's published test cases, incremental input, and the
// constant-time tag comparison.
#include "storage/hmac.h"

#include <gtest/gtest.h>

#include <string>

namespace cohort::storage {
namespace {

std::span<const std::byte> Bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

std::string Hex(const HmacSha256Tag& tag) { return Sha256DigestHex(tag); }

TEST(HmacSha256Test, MatchesRfc4231TestCases) {
  // Test case 1: key 0x0b x 20, "Hi There".
  EXPECT_EQ(Hex(HmacSha256(Bytes(std::string(20, '\x0b'))).Update("Hi There").Finish()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  // Test case 2: key "Jefe".
  EXPECT_EQ(Hex(HmacSha256(Bytes("Jefe")).Update("what do ya want for nothing?").Finish()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // Test case 6: a key longer than the block (131 bytes of 0xaa), hashed first.
  EXPECT_EQ(Hex(HmacSha256(Bytes(std::string(131, '\xaa')))
                    .Update("Test Using Larger Than Block-Size Key - Hash Key First")
                    .Finish()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

TEST(HmacSha256Test, PiecesGiveTheSameTagAsTheWhole) {
  const std::string key = "k", message = "what do ya want for nothing?";
  HmacSha256 pieces(Bytes(key));
  for (char c : message) pieces.Update(std::string(1, c));
  EXPECT_EQ(pieces.Finish(), HmacSha256(Bytes(key)).Update(message).Finish());
}

TEST(HmacSha256Test, TagsCompareEqualOnlyWhenEveryByteAndTheLengthMatch) {
  const HmacSha256Tag a = HmacSha256(Bytes("k")).Update("m").Finish();
  HmacSha256Tag b = a;
  EXPECT_TRUE(HmacTagsEqual(std::as_bytes(std::span(a)), std::as_bytes(std::span(b))));
  b[31] ^= 1;
  EXPECT_FALSE(HmacTagsEqual(std::as_bytes(std::span(a)), std::as_bytes(std::span(b))));
  EXPECT_FALSE(HmacTagsEqual(std::as_bytes(std::span(a)), std::as_bytes(std::span(a).first(31))));
}

}  // namespace
}  // namespace cohort::storage
