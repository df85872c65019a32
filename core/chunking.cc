#include "core/chunking.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cohort::core {

uint32_t ChunkCount(size_t total_bytes, size_t chunk_bytes) {
  return static_cast<uint32_t>((total_bytes + chunk_bytes - 1) / chunk_bytes);
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

ParameterSetAssembler::ParameterSetAssembler(Manifest manifest, uint32_t declared_count, size_t chunk_bytes)
    : set_(std::move(manifest)), sequence_(set_.manifest().total_bytes(), declared_count, chunk_bytes) {}

absl::Status ParameterSetAssembler::Add(uint32_t index, uint32_t count, std::span<const std::byte> data) {
  if (absl::Status s = sequence_.CheckNext(index, count, data.size()); !s.ok()) return s;
  const size_t offset = sequence_.Advance(data.size());
  std::memcpy(set_.bytes().data() + offset, data.data(), data.size());
  return absl::OkStatus();
}

absl::StatusOr<ParameterSet> ParameterSetAssembler::Finish() && {
  if (absl::Status s = sequence_.CheckComplete(); !s.ok()) return s;
  return std::move(set_);
}

}  // namespace cohort::core
