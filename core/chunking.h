#pragma once
// Chunked transfer of a parameter set. A model of B bytes travels as ceil(B / chunk_bytes)
// chunks, chunk i holding bytes [i * chunk_bytes, min(B, (i + 1) * chunk_bytes)) of the
// set's contiguous buffer (see parameter_set.h). Chunks must arrive in order, each
// repeating the total count; the receiver checks index, count and size of every chunk.

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "core/parameter_set.h"

namespace cohort::core {

inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;  // 1 MiB: far under gRPC's 4 MiB

uint32_t ChunkCount(size_t total_bytes, size_t chunk_bytes);
// Bytes of chunk `index` of a `total_bytes` stream.
std::span<const std::byte> ChunkOf(std::span<const std::byte> all, uint32_t index, size_t chunk_bytes);

// Checks one incoming chunk stream against the layout it announced. Shared by the receiver
// of global models (client) and of updates (server) so both reject the same things.
class ChunkSequence {
 public:
  ChunkSequence(size_t total_bytes, uint32_t declared_count, size_t chunk_bytes);

  // OK when `index`/`count`/`size` are what the next chunk must be; names what is wrong.
  absl::Status CheckNext(uint32_t index, uint32_t count, size_t size) const;
  // Records that the chunk just checked was consumed; returns its byte offset.
  size_t Advance(size_t size);
  // OK once every chunk arrived.
  absl::Status CheckComplete() const;
  uint32_t next_index() const { return next_index_; }

 private:
  size_t total_bytes_;
  uint32_t declared_count_;
  size_t chunk_bytes_;
  uint32_t next_index_ = 0;
  size_t received_bytes_ = 0;
};

// Fills a ParameterSet from its chunk stream (the client side of a global-model download).
class ParameterSetAssembler {
 public:
  ParameterSetAssembler(Manifest manifest, uint32_t declared_count, size_t chunk_bytes);
  absl::Status Add(uint32_t index, uint32_t count, std::span<const std::byte> data);
  // The assembled set; fails when chunks are missing.
  absl::StatusOr<ParameterSet> Finish() &&;

 private:
  ParameterSet set_;
  ChunkSequence sequence_;
};

}  // namespace cohort::core
