#include "core/chunking.h"

#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace cohort::core {

void KeepFreedMemoryForChunkStreams() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Setting M_MMAP_THRESHOLD also stops glibc from adjusting both thresholds itself.
    ::mallopt(M_MMAP_THRESHOLD, 8 << 20);
    ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
    // Memory kept in one arena serves only the threads of that arena: with glibc's 16
    // arenas on two cores, 32 concurrent uploads kept 1.9 model sizes more at their
    // peak than 4 did; with 2, about 1.05 (0.5 without any of this).
    ::mallopt(M_ARENA_MAX, 2);
  });
}

uint32_t ChunkCount(size_t total_bytes, size_t chunk_bytes) {
  return static_cast<uint32_t>((total_bytes + chunk_bytes - 1) / chunk_bytes);
}

absl::StatusOr<size_t> PlainChunkSize(const ChunkCodec* codec, uint32_t index, size_t encoded_size) {
  if (codec == nullptr) return encoded_size;
  if (encoded_size < codec->overhead()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": ", encoded_size,
                                                   " bytes, shorter than a sealed chunk's ", codec->overhead(),
                                                   " bytes of nonce and tag"));
  }
  return encoded_size - codec->overhead();
}

std::span<const std::byte> ChunkOf(std::span<const std::byte> all, uint32_t index, size_t chunk_bytes) {
  const size_t begin = size_t{index} * chunk_bytes;
  const size_t end = std::min(all.size(), begin + chunk_bytes);
  return all.subspan(begin, end - begin);
}

ChunkSequence::ChunkSequence(size_t total_bytes, uint32_t declared_count, size_t chunk_bytes)
    : total_bytes_(total_bytes), declared_count_(declared_count), chunk_bytes_(chunk_bytes) {}

absl::Status ChunkSequence::CheckNext(uint32_t index, uint32_t count, size_t size) const {
  if (count != declared_count_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, ": chunk count ", count, " differs from the declared ", declared_count_));
  }
  if (index != next_index_) {
    return absl::InvalidArgumentError(absl::StrCat("chunk out of order: expected chunk ", next_index_,
                                                   " of ", declared_count_, ", got chunk ", index));
  }
  if (index >= declared_count_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, " is past the last chunk (", declared_count_, " chunks)"));
  }
  const size_t expected = std::min(chunk_bytes_, total_bytes_ - received_bytes_);
  if (size != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, ": expected ", expected, " bytes, got ", size));
  }
  return absl::OkStatus();
}

size_t ChunkSequence::Advance(size_t size) {
  const size_t offset = received_bytes_;
  received_bytes_ += size;
  ++next_index_;
  return offset;
}

absl::Status ChunkSequence::CheckComplete() const {
  if (declared_count_ != ChunkCount(total_bytes_, chunk_bytes_)) {
    return absl::InvalidArgumentError(absl::StrCat("declared ", declared_count_, " chunks, but ",
                                                   total_bytes_, " bytes need ",
                                                   ChunkCount(total_bytes_, chunk_bytes_)));
  }
  if (next_index_ != declared_count_ || received_bytes_ != total_bytes_) {
    return absl::InvalidArgumentError(absl::StrCat("stream ended after ", next_index_, " of ",
                                                   declared_count_, " chunks (", received_bytes_,
                                                   " of ", total_bytes_, " bytes)"));
  }
  return absl::OkStatus();
}

ParameterSetAssembler::ParameterSetAssembler(Manifest manifest, uint32_t declared_count, size_t chunk_bytes,
                                             const ChunkCodec* codec, ParameterSet reuse)
    : set_(reuse.manifest() == manifest ? std::move(reuse) : ParameterSet(std::move(manifest))),
      sequence_(set_.manifest().total_bytes(), declared_count, chunk_bytes),
      codec_(codec) {}

absl::Status ParameterSetAssembler::Add(uint32_t index, uint32_t count, std::span<const std::byte> data) {
  absl::StatusOr<size_t> size = PlainChunkSize(codec_, index, data.size());
  if (!size.ok()) return size.status();
  if (absl::Status s = sequence_.CheckNext(index, count, *size); !s.ok()) return s;
  const std::span<std::byte> target = set_.bytes().subspan(sequence_.Advance(*size), *size);
  if (codec_ == nullptr) {
    std::memcpy(target.data(), data.data(), data.size());
    return absl::OkStatus();
  }
  // Opened in place: the plaintext goes straight into the model, with no copy after it.
  absl::Status opened = codec_->Open(index, data, target);
  if (!opened.ok()) failed_ = opened;  // the chunk was counted: Finish must not pass over it
  return opened;
}

absl::StatusOr<ParameterSet> ParameterSetAssembler::Finish() && {
  if (!failed_.ok()) return failed_;
  if (absl::Status s = sequence_.CheckComplete(); !s.ok()) return s;
  return std::move(set_);
}

}  // namespace cohort::core
