// Fuzzes the decoding of compressed update chunks (core/update_compression.h) as the
// server's receiver and fold meet them: core::UpdateReceiver with an encoding, then
// core::StreamingFedAvg, which decodes the spooled chunks again. Sealing is covered by
// update_receiver_fuzzer; here the payloads arrive unsealed, so every byte reaches the
// decoder.
//
// The input:
//   byte 0     method: bit 0 clear int8, set topk; bits 1-3 pick topk_fraction
//              (0.01, 0.05, 0.1, 0.25, 0.5, ...)
//   byte 1     floats per chunk: 1 + b % 64; the update is 3 chunks of that, the last
//              one shorter by byte 2 % that
//   then       chunks until the input ends, each a u16 little-endian length (cut to what
//              is left) and that many payload bytes, fed in order as chunks 0, 1, 2
//
// Properties beyond "no crash, leak or hang": a payload DecodeChunk accepts has only finite
// values, at most TopKEntries non-zero ones for topk; an update the receiver accepts
// folds, alone at weight 1 into a zero model, to exactly the values DecodeChunk gives.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/fedavg.h"
#include "core/update_compression.h"
#include "fuzz/fuzz_scratch.h"

namespace {

using namespace cohort;

constexpr double kFractions[] = {0.01, 0.05, 0.1, 0.25, 0.5, 0.5, 0.3, 0.02};

void Check(bool ok, const char* what) {
  if (!ok) fuzz::PropertyFailed(what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  core::UpdateEncoding encoding;
  encoding.method = (data[0] & 1) ? core::CompressionMethod::kTopK : core::CompressionMethod::kInt8;
  encoding.topk_fraction = encoding.method == core::CompressionMethod::kTopK ? kFractions[(data[0] >> 1) & 7] : 0;
  const size_t per_chunk = 1 + data[1] % 64;
  const size_t total = 3 * per_chunk - data[2] % per_chunk;
  const core::Manifest manifest({{"w", core::DType::kFloat32, {static_cast<int64_t>(total)}}});
  const size_t chunk_bytes = per_chunk * sizeof(float);

  const std::filesystem::path spool = fuzz::ScratchDir() / "compressed.update";
  absl::StatusOr<core::UpdateReceiver> receiver =
      core::UpdateReceiver::Open(manifest, 3, chunk_bytes, spool, {}, nullptr, encoding);
  Check(receiver.ok(), "the receiver opens");
  std::vector<float> expected(total, 0.0f);
  bool all_accepted = true;
  size_t pos = 3;
  for (uint32_t index = 0; index < 3 && pos < size; ++index) {
    size_t length = data[pos] | (pos + 1 < size ? size_t{data[pos + 1]} << 8 : 0);
    pos += 2;
    length = std::min(length, size - std::min(pos, size));
    std::string payload(reinterpret_cast<const char*>(data + std::min(pos, size)), length);
    pos += length;
    const size_t begin = index * per_chunk;
    const size_t n = std::min(per_chunk, total - begin);
    std::vector<float> decoded(n);
    const absl::Status direct =
        core::DecodeChunk(encoding, index, std::as_bytes(std::span<const char>(payload)), decoded);
    if (direct.ok()) {
      size_t nonzero = 0;
      for (float v : decoded) {
        Check(std::isfinite(v), "decoded values are finite");
        nonzero += v != 0.0f;
      }
      if (encoding.method == core::CompressionMethod::kTopK) {
        Check(nonzero <= core::TopKEntries(encoding.topk_fraction, n), "topk carries at most k values");
      }
      std::copy(decoded.begin(), decoded.end(), expected.begin() + static_cast<std::ptrdiff_t>(begin));
    }
    const absl::Status received = receiver->AddChunkInPlace(
        index, 3, std::as_writable_bytes(std::span(payload.data(), payload.size())));
    Check(received.ok() == direct.ok(), "the receiver accepts exactly what DecodeChunk accepts");
    if (!received.ok()) {
      all_accepted = false;
      break;
    }
  }
  absl::StatusOr<core::SpooledUpdate> update = receiver->Finish(1.0, "site-a");
  if (!update.ok()) return 0;
  Check(all_accepted, "only a stream of accepted chunks finishes");
  core::StreamingFedAvg fedavg(manifest, 1, 1);
  Check(fedavg.Add(std::move(*update)).ok(), "an accepted update folds");
  core::ParameterSet global(manifest);
  Check(fedavg.ApplyTo(global).ok(), "the fold applies");
  for (size_t i = 0; i < total; ++i) Check(global.floats()[i] == expected[i], "the fold decodes what was accepted");
  return 0;
}
