#pragma once
// Compressed updates: how a site shrinks its update before sealing it, and how the server
// turns each chunk back into float32 values (docs/configuration.md, `federation.compression`).
//
// An update is still cut into the chunks of core/chunking.h: chunk i covers the floats
// [i * chunk_bytes / 4, min(total, (i + 1) * chunk_bytes / 4)) of the delta, n floats. What
// changes is the chunk's payload, which is then sealed as a plain chunk is (wire/sealing.h):
//
//   none   n float32 values, the chunk's bytes as they are (4n bytes)
//   int8   scale: float32 | q[0..n): int8                                    (4 + n bytes)
//          value[i] = scale * q[i]; scale finite, >= 0 and <= FLT_MAX / 127, every q in
//          [-127, 127]. The site sets scale = max|x| / 127 and rounds x / scale to the
//          nearest integer, or stochastically (floor(x / scale + u), u uniform in [0, 1):
//          unbiased), so each value is off by at most one scale step.
//   topk   k: uint32 | k entries of (index: uint32, value: float32)          (4 + 8k bytes)
//          value at `index` (within the chunk), every other value 0; 1 <= k <=
//          TopKEntries(topk_fraction, n), indices strictly increasing and < n, values
//          finite. The site keeps the k values of largest magnitude.
// All integers and floats little-endian (the hosts' order, as plain chunks' floats are).
//
// A chunk is decoded into float32 wherever it is read (the server's receiver checks it as
// it arrives, the fold decodes it again from the spool into its window), so the server
// never holds more than a chunk of decoded values per upload beside the model, and the
// checks a plain update passes (NaN/Inf, the running L2 norm, the weight cap) apply to
// the decoded values. A payload that breaks any rule above is refused, naming the chunk.
//
// Error feedback (Seide et al. 2014; Stich et al. 2018): the site adds what earlier rounds'
// compression left out before compressing, and keeps what this round's leaves out:
//   c = delta + residual;  sent = Compress(c);  residual = c - Decode(sent).
// The residual is model-sized and lives at the site (client/update_residual.h).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::core {

enum class CompressionMethod : uint8_t { kNone = 0, kInt8 = 1, kTopK = 2 };

// The `federation.compression` section. Keys that do not apply to the method are refused
// (as in the privacy section), so a setting never silently goes unused.
struct CompressionConfig {
  std::string method = "none";     // none | int8 | topk
  double topk_fraction = 0.01;     // topk only: share of each chunk's values sent, in (0, 0.5]
  bool stochastic_rounding = true;  // int8 only: unbiased rounding (else to nearest)
  bool error_feedback = true;      // int8 and topk: carry what compression left out to the next round

  bool enabled() const { return method != "none"; }
};

// What a receiver needs to decode a chunk: the method and, for topk, the bound on k.
struct UpdateEncoding {
  CompressionMethod method = CompressionMethod::kNone;
  double topk_fraction = 0;  // topk only

  bool compressed() const { return method != CompressionMethod::kNone; }
  bool operator==(const UpdateEncoding&) const = default;
};

// Errors name `federation.compression.<key>`.
absl::StatusOr<CompressionConfig> ParseCompressionConfig(const nlohmann::json& json);
// Only the keys that apply to the method, so it round-trips through ParseCompressionConfig.
nlohmann::json ToJson(const CompressionConfig& config);
UpdateEncoding EncodingOf(const CompressionConfig& config);
// "none", "int8" or "topk"; for messages.
const char* CompressionMethodName(CompressionMethod method);
// "int8", "topk (topk_fraction 0.01)", "none (float32)"; for messages.
std::string DescribeEncoding(const UpdateEncoding& encoding);

// The most entries a topk chunk of `n` values may carry: ceil(fraction * n), at least 1,
// at most n.
size_t TopKEntries(double topk_fraction, size_t n);

// Encodes one chunk's values into `out` (replaced). `seed` drives stochastic rounding (the
// same seed, the same bytes).
void EncodeChunk(const CompressionConfig& config, std::span<const float> values, uint64_t seed, std::string* out);

// Decodes one chunk's payload into `out`, which must hold exactly the chunk's n values.
// InvalidArgument naming chunk `index` and the rule broken (payload length, scale, an int8
// value, k, an index, a non-finite value); `out` is then unspecified.
absl::Status DecodeChunk(const UpdateEncoding& encoding, uint32_t index, std::span<const std::byte> payload,
                         std::span<float> out);

// An update's chunks, encoded and not yet sealed.
struct EncodedUpdate {
  Manifest manifest;
  size_t chunk_bytes = 0;  // float bytes each chunk covers (the last fewer)
  UpdateEncoding encoding;
  std::vector<std::string> chunks;

  size_t payload_bytes() const;
};

// Compresses `delta` chunk by chunk with error feedback: `residual` (empty, or one float
// per value of `delta`) is added before compressing and replaced by what this compression
// left out. Empty `residual`: no feedback. InvalidArgument when `residual` has the wrong
// size, `chunk_bytes` is not a positive multiple of 4, or the config's method is none.
absl::StatusOr<EncodedUpdate> CompressUpdate(const CompressionConfig& config, const ParameterSet& delta,
                                             std::span<float> residual, size_t chunk_bytes, uint64_t seed);

}  // namespace cohort::core
