// core/fedavg.h's UpdateReceiver: one update stream, checked chunk by chunk and spooled.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/fedavg.h"
#include "core/float_scan.h"

namespace cohort::core {

UpdateReceiver::UpdateReceiver(ChunkSequence sequence, storage::File file, UpdateLimits limits, size_t chunk_bytes,
                               std::shared_ptr<const ChunkCodec> codec, UpdateEncoding encoding)
    : sequence_(sequence),
      path_(file.path()),
      file_(std::move(file)),
      limits_(limits),
      chunk_bytes_(chunk_bytes),
      codec_(std::move(codec)),
      encoding_(encoding) {}

UpdateReceiver::UpdateReceiver(UpdateReceiver&& other) noexcept
    : sequence_(other.sequence_),
      path_(std::move(other.path_)),
      file_(std::move(other.file_)),
      limits_(other.limits_),
      chunk_bytes_(other.chunk_bytes_),
      codec_(std::move(other.codec_)),
      encoding_(other.encoding_),
      opened_(std::move(other.opened_)),
      payload_(std::move(other.payload_)),
      chunk_offsets_(std::move(other.chunk_offsets_)),
      spooled_bytes_(other.spooled_bytes_),
      sum_squares_(other.sum_squares_),
      kept_(other.kept_),
      refused_(other.refused_) {
  other.kept_ = true;  // the moved-from receiver no longer owns the file
}

UpdateReceiver::~UpdateReceiver() {
  file_ = storage::File();  // closed before the file is removed
  if (!kept_ && !path_.empty()) {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
}

absl::StatusOr<UpdateReceiver> UpdateReceiver::Open(const Manifest& manifest, uint32_t declared_count,
                                                    size_t chunk_bytes, std::filesystem::path spool_path,
                                                    UpdateLimits limits, std::shared_ptr<const ChunkCodec> codec,
                                                    UpdateEncoding encoding) {
  if (absl::Status s = manifest.CheckAllFloat32("an update for FedAvg"); !s.ok()) return s;
  if (chunk_bytes == 0 || chunk_bytes % sizeof(float) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_bytes: expected a positive multiple of 4, got ", chunk_bytes));
  }
  ChunkSequence sequence(manifest.total_bytes(), declared_count, chunk_bytes);
  // No O_TRUNC: a recycled spool file (StreamingFedAvg::ReuseSpoolFile) is written over in
  // place, in page-cache pages that already exist; Finish cuts off what is left past the end.
  absl::StatusOr<storage::File> file = storage::File::Open(spool_path, O_WRONLY | O_CREAT, 0600);
  if (!file.ok()) return file.status();
  return UpdateReceiver(sequence, std::move(*file), limits, chunk_bytes, std::move(codec), encoding);
}

absl::Status UpdateReceiver::Spool(std::span<const std::byte> data) {
  absl::Status written = file_.WriteAll(data);
  if (!written.ok()) {
    refused_ = true;  // the file no longer holds a prefix of the update
    return written;
  }
  spooled_bytes_ += data.size();
  return absl::OkStatus();
}

absl::Status UpdateReceiver::AddChunk(uint32_t index, uint32_t count, std::span<const std::byte> data) {
  return Receive(index, count, data, {});
}

absl::Status UpdateReceiver::AddChunkInPlace(uint32_t index, uint32_t count, std::span<std::byte> data) {
  return Receive(index, count, data, data);
}

absl::Status UpdateReceiver::Receive(uint32_t index, uint32_t count, std::span<const std::byte> data,
                                     std::span<std::byte> writable) {
  if (refused_) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk ", index, ": an earlier chunk of this upload was refused; the upload must start over"));
  }
  if (encoding_.compressed()) return ReceiveEncoded(index, count, data, writable);
  absl::StatusOr<size_t> size = PlainChunkSize(codec_.get(), index, data.size());
  if (!size.ok()) return size.status();
  if (absl::Status s = sequence_.CheckNext(index, count, *size); !s.ok()) return s;
  std::span<const std::byte> plain = data;
  bool spooled = false;
  if (codec_ != nullptr && !writable.empty()) {
    // Spooled as it arrived, sealed at rest, before opening overwrites it; a chunk refused
    // after this leaves the receiver refusing the rest, and its file is removed with it.
    if (absl::Status s = Spool(data); !s.ok()) return s;
    spooled = true;
    absl::StatusOr<std::span<std::byte>> opened = codec_->OpenInPlace(index, writable);
    if (!opened.ok()) {
      refused_ = true;
      return opened.status();
    }
    plain = *opened;
  } else if (codec_ != nullptr) {
    if (opened_.size() * sizeof(float) < *size) opened_.resize(chunk_bytes_ / sizeof(float));
    const std::span<std::byte> target = std::as_writable_bytes(std::span(opened_)).first(*size);
    if (absl::Status s = codec_->Open(index, data, target); !s.ok()) return s;
    plain = target;
  }
  absl::StatusOr<double> sum_squares = ScanChunk(index, plain);
  if (!sum_squares.ok()) {
    refused_ = spooled;
    return sum_squares.status();
  }
  sum_squares_ += *sum_squares;
  // Spooled as it arrived: sealed at rest, opened again only by the fold.
  if (!spooled) {
    if (absl::Status s = Spool(data); !s.ok()) return s;
  }
  sequence_.Advance(*size);
  return absl::OkStatus();
}

absl::Status UpdateReceiver::ReceiveEncoded(uint32_t index, uint32_t count, std::span<const std::byte> data,
                                            std::span<std::byte> writable) {
  // The encoded payload's size says nothing about the chunk's place: the place is checked
  // with the size the chunk must decode to, and the decoder checks the payload's size.
  const size_t size = sequence_.next_size();
  if (absl::Status s = sequence_.CheckNext(index, count, size); !s.ok()) return s;
  if (absl::StatusOr<size_t> payload_size = PlainChunkSize(codec_.get(), index, data.size()); !payload_size.ok()) {
    return payload_size.status();
  }
  // Spooled as it arrived, before opening in place overwrites it; any refusal after this
  // leaves the receiver refusing the rest, and the file is removed with it.
  refused_ = true;
  chunk_offsets_.push_back(spooled_bytes_);
  if (absl::Status s = Spool(data); !s.ok()) return s;
  std::span<const std::byte> payload = data;
  if (codec_ != nullptr && !writable.empty()) {
    absl::StatusOr<std::span<std::byte>> opened = codec_->OpenInPlace(index, writable);
    if (!opened.ok()) return opened.status();
    payload = *opened;
  } else if (codec_ != nullptr) {
    payload_.resize(data.size() - codec_->overhead());
    if (absl::Status s = codec_->Open(index, data, payload_); !s.ok()) return s;
    payload = payload_;
  }
  if (opened_.size() * sizeof(float) < size) opened_.resize(chunk_bytes_ / sizeof(float));
  const std::span<float> values = std::span(opened_).first(size / sizeof(float));
  if (absl::Status s = DecodeChunk(encoding_, index, payload, values); !s.ok()) return s;
  absl::StatusOr<double> sum_squares = ScanChunk(index, std::as_bytes(values));
  if (!sum_squares.ok()) return sum_squares.status();
  sum_squares_ += *sum_squares;
  sequence_.Advance(size);
  refused_ = false;
  return absl::OkStatus();
}

absl::StatusOr<SpooledUpdate> UpdateReceiver::Finish(double weight, std::string client_id) {
  if (absl::Status s = sequence_.CheckComplete(); !s.ok()) return s;
  const double norm = std::sqrt(sum_squares_);
  if (limits_.max_l2_norm > 0 && norm > limits_.max_l2_norm) {
    return absl::InvalidArgumentError(absl::StrCat("update L2 norm ", norm,
                                                   " exceeds federation.max_update_norm ",
                                                   limits_.max_l2_norm));
  }
  if (!(weight > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("num_samples: expected > 0, got ", weight));
  }
  // Cut what a reused file held past this update (only files have a length to cut).
  absl::StatusOr<struct stat> info = file_.Stat();
  if (!info.ok()) return info.status();
  if (S_ISREG(info->st_mode)) {
    if (absl::Status s = file_.Truncate(spooled_bytes_); !s.ok()) return s;
  }
  if (absl::Status s = file_.Close(); !s.ok()) return s;
  kept_ = true;
  opened_ = {};  // the last opened chunk is plaintext: give it back now, not with the receiver
  if (encoding_.compressed()) chunk_offsets_.push_back(spooled_bytes_);  // the end of the last chunk
  return SpooledUpdate{path_, weight, norm, std::move(client_id), chunk_bytes_, codec_, encoding_,
                       std::move(chunk_offsets_)};
}

}  // namespace cohort::core
