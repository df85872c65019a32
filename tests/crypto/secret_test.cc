#include "crypto/secret.h"

#include <gtest/gtest.h>

#include <type_traits>
#include <vector>

namespace cohort::crypto {
namespace {

static_assert(!std::is_copy_constructible_v<SecretBytes>);
static_assert(!std::is_copy_assignable_v<SecretBytes>);
static_assert(std::is_nothrow_move_constructible_v<SecretBytes>);

TEST(SecretBytesTest, StartsZeroFilledAtTheRequestedSize) {
  SecretBytes secret(32);
  ASSERT_EQ(secret.size(), 32u);
  for (std::uint8_t b : secret.span()) EXPECT_EQ(b, 0);
}

TEST(SecretBytesTest, MovingLeavesTheSourceEmptyAndTheTargetWithTheBytes) {
  const std::vector<std::uint8_t> bytes = {1, 2, 3, 4};
  SecretBytes source = SecretBytes::CopyOf(bytes);
  const std::uint8_t* storage = source.data();
  SecretBytes target = std::move(source);
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): the behaviour under test.
  EXPECT_EQ(source.data(), nullptr);
  EXPECT_EQ(target.data(), storage);  // Handed over, not copied.
  EXPECT_EQ(std::vector<std::uint8_t>(target.span().begin(), target.span().end()), bytes);

  SecretBytes assigned(8);
  assigned = std::move(target);
  EXPECT_TRUE(target.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(assigned.size(), 4u);
}

TEST(SecretBytesTest, ConstantTimeEqualsComparesLengthAndEveryByte) {
  const SecretBytes a = SecretBytes::CopyOf(std::vector<std::uint8_t>{1, 2, 3});
  EXPECT_TRUE(a.ConstantTimeEquals(a.Clone()));
  EXPECT_FALSE(a.ConstantTimeEquals(SecretBytes::CopyOf(std::vector<std::uint8_t>{1, 2, 4})));
  EXPECT_FALSE(a.ConstantTimeEquals(SecretBytes::CopyOf(std::vector<std::uint8_t>{1, 2})));
  EXPECT_TRUE(SecretBytes().ConstantTimeEquals(SecretBytes()));
}

TEST(SecretBytesTest, CloneIsAnIndependentCopy) {
  SecretBytes original = SecretBytes::CopyOf(std::vector<std::uint8_t>{9, 9});
  SecretBytes copy = original.Clone();
  copy.mutable_span()[0] = 1;
  EXPECT_EQ(original.span()[0], 9);
  EXPECT_NE(original.data(), copy.data());
}

}  // namespace
}  // namespace cohort::crypto
