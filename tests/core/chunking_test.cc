#include "core/chunking.h"

#include <cstring>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort::core {
namespace {

using ::testing::HasSubstr;

TEST(ChunkCountTest, ZeroBytesNeedNoChunks) { EXPECT_EQ(ChunkCount(0, 1024), 0u); }

TEST(ChunkCountTest, AnExactMultipleNeedsNoExtraChunk) {
  EXPECT_EQ(ChunkCount(1024, 1024), 1u);
  EXPECT_EQ(ChunkCount(3 * 1024, 1024), 3u);
  EXPECT_EQ(ChunkCount(5 * kDefaultChunkBytes, kDefaultChunkBytes), 5u);
}

TEST(ChunkCountTest, OneByteOverAMultipleNeedsOneMoreChunk) {
  EXPECT_EQ(ChunkCount(1, 1024), 1u);
  EXPECT_EQ(ChunkCount(1025, 1024), 2u);
  EXPECT_EQ(ChunkCount(3 * 1024 + 1, 1024), 4u);
  EXPECT_EQ(ChunkCount(3 * 1024 - 1, 1024), 3u);
}

TEST(ChunkOfTest, ChunksTileTheBufferAndTheLastOneIsShort) {
  std::vector<std::byte> all(10);
  for (size_t i = 0; i < all.size(); ++i) all[i] = std::byte(i);
  const std::span<const std::byte> s(all);
  ASSERT_EQ(ChunkCount(all.size(), 4), 3u);
  EXPECT_EQ(ChunkOf(s, 0, 4).data(), all.data());
  EXPECT_EQ(ChunkOf(s, 0, 4).size(), 4u);
  EXPECT_EQ(ChunkOf(s, 1, 4).data(), all.data() + 4);
  EXPECT_EQ(ChunkOf(s, 1, 4).size(), 4u);
  EXPECT_EQ(ChunkOf(s, 2, 4).data(), all.data() + 8);
  EXPECT_EQ(ChunkOf(s, 2, 4).size(), 2u);
}

// A float32 + int64 set with every byte distinct enough that a misplaced chunk shows.
ParameterSet PatternedSet() {
  ParameterSet set(Manifest({{"layers.1.weight", DType::kFloat32, {6, 1, 5, 5}},
                             {"layers.1.bias", DType::kFloat32, {6}},
                             {"steps", DType::kInt64, {3}}}));
  std::span<std::byte> b = set.bytes();
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::byte((i * 131 + 7) & 0xff);
  return set;
}

TEST(ParameterSetAssemblerTest, RoundTripsASetWithManyChunkSizes) {
  const ParameterSet original = PatternedSet();
  const size_t total = original.manifest().total_bytes();
  ASSERT_EQ(total, 648u);
  for (size_t chunk_bytes : {size_t{1}, size_t{4}, size_t{7}, size_t{64}, size_t{324}, size_t{647}, size_t{648},
                             size_t{649}, kDefaultChunkBytes}) {
    SCOPED_TRACE(::testing::Message() << "chunk_bytes " << chunk_bytes);
    const uint32_t count = ChunkCount(total, chunk_bytes);
    ParameterSetAssembler assembler(original.manifest(), count, chunk_bytes);
    for (uint32_t i = 0; i < count; ++i) {
      ASSERT_TRUE(assembler.Add(i, count, ChunkOf(original.bytes(), i, chunk_bytes)).ok()) << "chunk " << i;
    }
    absl::StatusOr<ParameterSet> assembled = std::move(assembler).Finish();
    ASSERT_TRUE(assembled.ok()) << assembled.status();
    EXPECT_EQ(assembled->manifest(), original.manifest());
    ASSERT_EQ(assembled->bytes().size(), total);
    EXPECT_EQ(std::memcmp(assembled->bytes().data(), original.bytes().data(), total), 0);
  }
}

TEST(ParameterSetAssemblerTest, AnEmptySetNeedsNoChunks) {
  ParameterSetAssembler assembler(Manifest(), 0, 1024);
  absl::StatusOr<ParameterSet> assembled = std::move(assembler).Finish();
  ASSERT_TRUE(assembled.ok()) << assembled.status();
  EXPECT_EQ(assembled->bytes().size(), 0u);
}

class ChunkRefusalTest : public ::testing::Test {
 protected:
  static constexpr size_t kChunkBytes = 200;  // 648 bytes -> 4 chunks, the last of 48 bytes
  const ParameterSet original_ = PatternedSet();
  const uint32_t count_ = ChunkCount(original_.manifest().total_bytes(), kChunkBytes);
  std::span<const std::byte> Chunk(uint32_t i) const { return ChunkOf(original_.bytes(), i, kChunkBytes); }
};

TEST_F(ChunkRefusalTest, AnOutOfOrderChunkIsRefusedNamingBothIndices) {
  ASSERT_EQ(count_, 4u);
  ParameterSetAssembler assembler(original_.manifest(), count_, kChunkBytes);
  ASSERT_TRUE(assembler.Add(0, count_, Chunk(0)).ok());
  const absl::Status s = assembler.Add(2, count_, Chunk(2));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected chunk 1 of 4, got chunk 2"));
  // The refused chunk consumed nothing: the right one is still accepted.
  EXPECT_TRUE(assembler.Add(1, count_, Chunk(1)).ok());
}

TEST_F(ChunkRefusalTest, ARepeatedChunkIsRefused) {
  ParameterSetAssembler assembler(original_.manifest(), count_, kChunkBytes);
  ASSERT_TRUE(assembler.Add(0, count_, Chunk(0)).ok());
  ASSERT_TRUE(assembler.Add(1, count_, Chunk(1)).ok());
  const absl::Status s = assembler.Add(1, count_, Chunk(1));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected chunk 2 of 4, got chunk 1"));
}

TEST_F(ChunkRefusalTest, AStreamMissingItsLastChunkIsRefusedAtFinish) {
  ParameterSetAssembler assembler(original_.manifest(), count_, kChunkBytes);
  for (uint32_t i = 0; i + 1 < count_; ++i) ASSERT_TRUE(assembler.Add(i, count_, Chunk(i)).ok());
  absl::StatusOr<ParameterSet> assembled = std::move(assembler).Finish();
  ASSERT_FALSE(assembled.ok());
  EXPECT_EQ(assembled.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(assembled.status().message()), HasSubstr("ended after 3 of 4 chunks (600 of 648 bytes)"));
}

TEST_F(ChunkRefusalTest, AChunkPastTheLastIsRefused) {
  ParameterSetAssembler assembler(original_.manifest(), count_, kChunkBytes);
  for (uint32_t i = 0; i < count_; ++i) ASSERT_TRUE(assembler.Add(i, count_, Chunk(i)).ok());
  const absl::Status s = assembler.Add(4, count_, Chunk(3));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("chunk 4 is past the last chunk (4 chunks)"));
}

TEST_F(ChunkRefusalTest, AChunkRepeatingADifferentCountIsRefusedNamingTheChunk) {
  ParameterSetAssembler assembler(original_.manifest(), count_, kChunkBytes);
  ASSERT_TRUE(assembler.Add(0, count_, Chunk(0)).ok());
  const absl::Status s = assembler.Add(1, 5, Chunk(1));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("chunk 1: chunk count 5 differs from the declared 4"));
}

TEST_F(ChunkRefusalTest, ADeclaredCountThatDoesNotFitTheModelIsRefusedAtFinish) {
  // Three chunks of 200 bytes cannot hold 648 bytes; a sender declaring 3 can never finish.
  ParameterSetAssembler assembler(original_.manifest(), 3, kChunkBytes);
  for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(assembler.Add(i, 3, Chunk(i)).ok());
  absl::StatusOr<ParameterSet> assembled = std::move(assembler).Finish();
  ASSERT_FALSE(assembled.ok());
  EXPECT_THAT(std::string(assembled.status().message()), HasSubstr("declared 3 chunks, but 648 bytes need 4"));
}

TEST_F(ChunkRefusalTest, AChunkOfTheWrongSizeIsRefusedNamingTheChunkAndSizes) {
  ParameterSetAssembler assembler(original_.manifest(), count_, kChunkBytes);
  ASSERT_TRUE(assembler.Add(0, count_, Chunk(0)).ok());
  const absl::Status shorter = assembler.Add(1, count_, Chunk(1).first(199));
  ASSERT_FALSE(shorter.ok());
  EXPECT_THAT(std::string(shorter.message()), HasSubstr("chunk 1: expected 200 bytes, got 199"));
  ASSERT_TRUE(assembler.Add(1, count_, Chunk(1)).ok());
  ASSERT_TRUE(assembler.Add(2, count_, Chunk(2)).ok());
  // The last chunk must be exactly the remainder, not a full chunk.
  const absl::Status longer = assembler.Add(3, count_, original_.bytes().subspan(400, 200));
  ASSERT_FALSE(longer.ok());
  EXPECT_THAT(std::string(longer.message()), HasSubstr("chunk 3: expected 48 bytes, got 200"));
}

TEST(ChunkSequenceTest, AdvanceReturnsEachChunksByteOffset) {
  ChunkSequence seq(10, 3, 4);
  ASSERT_TRUE(seq.CheckNext(0, 3, 4).ok());
  EXPECT_EQ(seq.Advance(4), 0u);
  ASSERT_TRUE(seq.CheckNext(1, 3, 4).ok());
  EXPECT_EQ(seq.Advance(4), 4u);
  EXPECT_FALSE(seq.CheckComplete().ok());
  ASSERT_TRUE(seq.CheckNext(2, 3, 2).ok());
  EXPECT_EQ(seq.Advance(2), 8u);
  EXPECT_EQ(seq.next_index(), 3u);
  EXPECT_TRUE(seq.CheckComplete().ok());
}

}  // namespace
}  // namespace cohort::core
