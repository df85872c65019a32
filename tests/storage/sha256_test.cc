#include "storage/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace cohort::storage {
namespace {

// FIPS 180-2, appendix B: the published SHA-256 examples.
TEST(Sha256Test, MatchesThePublishedExamples) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, IncrementalUpdatesEqualOneShot) {
  // One million 'a' (FIPS 180-2 B.3), fed in uneven pieces.
  Sha256 hash;
  const std::string piece(999, 'a');
  std::size_t fed = 0;
  while (fed + piece.size() <= 1000000) {
    hash.Update(piece);
    fed += piece.size();
  }
  hash.Update(std::string(1000000 - fed, 'a'));
  EXPECT_EQ(hash.FinishHex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  const std::string text = "line one\nline two\n";
  EXPECT_EQ(Sha256().Update("line one\n").Update("line two\n").FinishHex(), Sha256Hex(text));
  EXPECT_EQ(Sha256Hex(std::as_bytes(std::span(text.data(), text.size()))), Sha256Hex(text));
}

TEST(Sha256Test, DigestBytesAndHexAgree) {
  const Sha256Digest digest = Sha256().Update("abc").Finish();
  EXPECT_EQ(digest[0], 0xba);
  EXPECT_EQ(digest[31], 0xad);
  EXPECT_EQ(Sha256DigestHex(digest), Sha256Hex("abc"));
}

}  // namespace
}  // namespace cohort::storage
