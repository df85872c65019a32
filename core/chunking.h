#pragma once
// Chunked transfer of a parameter set. A model of B bytes travels as ceil(B / chunk_bytes)
// chunks, chunk i holding bytes [i * chunk_bytes, min(B, (i + 1) * chunk_bytes)) of the
// set's contiguous buffer (see parameter_set.h). Chunks must arrive in order, each
// repeating the total count; the receiver checks index, count and size of every chunk.
//
// On the wire and at rest a chunk may be encoded (sealed): a ChunkCodec says how many
// bytes the encoding adds and opens an encoded chunk back into its plaintext. Sizes in
// this header (chunk_bytes, ChunkSequence) are always plaintext sizes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::core {

inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;  // 1 MiB: far under gRPC's 4 MiB

uint32_t ChunkCount(size_t total_bytes, size_t chunk_bytes);

// Opens the encoded chunks of one stream (one model, one direction, one round). Core
// stores encoded chunks verbatim and never sees a key: the wire layer implements this
// with crypto/ (wire/sealing.h: AES-256-GCM, each chunk bound to its job, round,
// client, index, count, model version and direction). A null codec means plaintext.
class ChunkCodec {
 public:
  virtual ~ChunkCodec() = default;
  // Bytes an encoded chunk has beyond its plaintext (the same for every chunk).
  virtual size_t overhead() const = 0;
  // Opens chunk `index` of the stream: `encoded` is plain.size() + overhead() bytes.
  // On failure `plain` holds nothing of the chunk (all zeros) and the status says why:
  // DataLoss when the chunk does not authenticate. Safe to call from several threads.
  virtual absl::Status Open(uint32_t index, std::span<const std::byte> encoded, std::span<std::byte> plain) const = 0;
  // The same, where `encoded` lies: its bytes are overwritten and the plaintext is the
  // returned span inside them (encoded.size() - overhead() bytes), so no buffer of the
  // chunk's size is needed. On failure those bytes are all zeros.
  virtual absl::StatusOr<std::span<std::byte>> OpenInPlace(uint32_t index, std::span<std::byte> encoded) const = 0;
};

// The plaintext size of an encoded chunk of `encoded_size` bytes; InvalidArgument naming
// chunk `index` when it is shorter than the codec's overhead. No codec: the same size.
absl::StatusOr<size_t> PlainChunkSize(const ChunkCodec* codec, uint32_t index, size_t encoded_size);
// Bytes of chunk `index` of a `total_bytes` stream.
std::span<const std::byte> ChunkOf(std::span<const std::byte> all, uint32_t index, size_t chunk_bytes);

// Makes glibc's malloc keep the memory that chunk streams free for the next chunks,
// process-wide, once (later calls do nothing). Every chunk of a model passes through
// buffers of about a chunk's size that gRPC and protobuf allocate and free per message;
// with glibc's defaults freed memory is handed back to the kernel (heap trimming and
// per-chunk mmap/munmap), so each chunk lands in fresh pages, which cost 0.3 GB/s to
// fault in on this kind of virtual machine. Allocations up to 8 MiB (a chunk message is
// at most 3 MiB plus framing) come from the heap, the heap is trimmed only past 1 GiB
// of free memory at its top, and at most two arenas are made. Measured (docs/
// benchmarks.md): uploads 15-25% faster in alternating runs (1.5-2x under memory
// pressure); the price is memory kept for reuse, about 1 MB more server peak per
// concurrent upload than with glibc's defaults (about 3 MB in all).
// Called by the client agent before it connects and by the server before the first
// model stream.
void KeepFreedMemoryForChunkStreams();

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
  // Plaintext bytes the next chunk must have (0 once every byte arrived); a compressed
  // chunk (core/update_compression.h) decodes to exactly this many.
  size_t next_size() const { return std::min(chunk_bytes_, total_bytes_ - received_bytes_); }

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
  // `codec` (may be null: plaintext chunks) opens each chunk straight into the set and
  // must outlive the assembler. `reuse`: a set from an earlier download whose buffer is
  // filled again when its manifest is `manifest`, so a client does not fault in (and
  // zero) a fresh model-sized buffer every round; otherwise a new zero-filled set.
  ParameterSetAssembler(Manifest manifest, uint32_t declared_count, size_t chunk_bytes,
                        const ChunkCodec* codec = nullptr, ParameterSet reuse = {});
  // `data`: the chunk as it arrived (encoded when there is a codec).
  absl::Status Add(uint32_t index, uint32_t count, std::span<const std::byte> data);
  // The assembled set; fails when chunks are missing.
  absl::StatusOr<ParameterSet> Finish() &&;

 private:
  ParameterSet set_;
  ChunkSequence sequence_;
  const ChunkCodec* codec_;
  absl::Status failed_;  // the first chunk that did not open
};

}  // namespace cohort::core
