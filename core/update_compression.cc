#include "core/update_compression.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/config_reader.h"

namespace cohort::core {
namespace {

constexpr size_t kScaleBytes = sizeof(float);
constexpr size_t kCountBytes = sizeof(uint32_t);
constexpr size_t kEntryBytes = sizeof(uint32_t) + sizeof(float);
constexpr float kMaxScale = FLT_MAX / 127.0f;

template <typename T>
T Load(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

template <typename T>
void Append(std::string* out, T value) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// splitmix64: a fast generator whose stream depends only on its seed, so an encoding
// can be reproduced; its statistical quality is ample for choosing a rounding direction.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  // Uniform in [0, 1), 24 bits: as fine as a float resolves.
  float Uniform() { return static_cast<float>(Next() >> 40) * (1.0f / 16777216.0f); }

 private:
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

void EncodeInt8(std::span<const float> values, bool stochastic, uint64_t seed, std::string* out) {
  // NaN or Inf makes the scale non-finite, which every receiver refuses.
  float max_abs = 0;
  for (float v : values) {
    if (!std::isfinite(v)) {
      max_abs = std::numeric_limits<float>::quiet_NaN();
      break;
    }
    max_abs = std::max(max_abs, std::fabs(v));
  }
  const float scale = max_abs / 127.0f;
  out->clear();
  out->reserve(kScaleBytes + values.size());
  Append(out, scale);
  SplitMix64 rng(seed);
  for (float v : values) {
    float q = 0;
    if (scale > 0 && std::isfinite(scale)) {
      const float x = v / scale;
      q = stochastic ? std::floor(x + rng.Uniform()) : std::nearbyint(x);
      q = std::clamp(q, -127.0f, 127.0f);  // x may round a hair past 127
    }
    out->push_back(static_cast<char>(static_cast<int8_t>(q)));
  }
}

void EncodeTopK(std::span<const float> values, double fraction, std::string* out) {
  const size_t k = TopKEntries(fraction, values.size());
  std::vector<uint32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0u);
  // NaN ranks as the largest, so a broken delta is sent (and refused) rather than hidden.
  auto magnitude = [&](uint32_t i) {
    const float a = std::fabs(values[i]);
    return std::isnan(a) ? INFINITY : a;
  };
  std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                   [&](uint32_t a, uint32_t b) { return magnitude(a) > magnitude(b); });
  order.resize(k);
  std::sort(order.begin(), order.end());
  out->clear();
  out->reserve(kCountBytes + k * kEntryBytes);
  Append(out, static_cast<uint32_t>(k));
  for (uint32_t i : order) {
    Append(out, i);
    Append(out, values[i]);
  }
}

absl::Status DecodeInt8(uint32_t index, std::span<const std::byte> payload, std::span<float> out) {
  if (payload.size() != kScaleBytes + out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": an int8 chunk of ", out.size(),
                                                   " values is ", kScaleBytes + out.size(),
                                                   " bytes (scale and values), got ", payload.size()));
  }
  const float scale = Load<float>(payload.data());
  if (!std::isfinite(scale) || scale < 0 || scale > kMaxScale) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": int8 scale ", scale,
                                                   " is not a finite number in [0, FLT_MAX / 127]"));
  }
  const auto* q = reinterpret_cast<const int8_t*>(payload.data() + kScaleBytes);
  int bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    bad |= q[i] == INT8_MIN;
    out[i] = scale * static_cast<float>(q[i]);
  }
  if (bad != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, ": int8 value -128 is outside the encoding's range [-127, 127]"));
  }
  return absl::OkStatus();
}

absl::Status DecodeTopK(uint32_t index, double fraction, std::span<const std::byte> payload, std::span<float> out) {
  if (payload.size() < kCountBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, ": a topk chunk starts with a 4-byte count, got ", payload.size(), " bytes"));
  }
  const uint32_t k = Load<uint32_t>(payload.data());
  const size_t max_k = TopKEntries(fraction, out.size());
  if (k == 0 || k > max_k) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": topk count ", k, " is outside [1, ", max_k,
                                                   "] for ", out.size(), " values at topk_fraction ", fraction));
  }
  if (payload.size() != kCountBytes + size_t{k} * kEntryBytes) {
    return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": a topk chunk of ", k, " entries is ",
                                                   kCountBytes + size_t{k} * kEntryBytes, " bytes, got ",
                                                   payload.size()));
  }
  std::fill(out.begin(), out.end(), 0.0f);
  const std::byte* entry = payload.data() + kCountBytes;
  int64_t previous = -1;
  for (uint32_t e = 0; e < k; ++e, entry += kEntryBytes) {
    const uint32_t at = Load<uint32_t>(entry);
    const float value = Load<float>(entry + sizeof(uint32_t));
    // Checked before the write: a hostile index never reaches memory outside the chunk.
    if (at >= out.size() || static_cast<int64_t>(at) <= previous) {
      return absl::InvalidArgumentError(absl::StrCat("chunk ", index, ": topk entry ", e, " has index ", at,
                                                     "; indices must be strictly increasing and below ", out.size()));
    }
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", index, ": topk entry ", e, " (index ", at, ") holds a NaN or Inf value"));
    }
    out[at] = value;
    previous = at;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompressionConfig> ParseCompressionConfig(const nlohmann::json& json) {
  CompressionConfig c;
  ConfigReader r("federation.compression", json);
  r.String("method", &c.method, {"none", "int8", "topk"});
  if (c.method == "topk") r.Number("topk_fraction", &c.topk_fraction, 0, 0.5, /*min_exclusive=*/true);
  if (c.method == "int8") r.Bool("stochastic_rounding", &c.stochastic_rounding);
  if (c.method != "none") r.Bool("error_feedback", &c.error_feedback);
  // Keys that do not apply to the method are left unread, so Finish names them.
  if (absl::Status s = r.Finish(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(s.message(), " (with method \"", c.method,
                                               "\"; topk_fraction applies to topk, stochastic_rounding to int8, "
                                               "error_feedback to both)"));
  }
  return c;
}

nlohmann::json ToJson(const CompressionConfig& c) {
  nlohmann::json j = {{"method", c.method}};
  if (c.method == "topk") j["topk_fraction"] = c.topk_fraction;
  if (c.method == "int8") j["stochastic_rounding"] = c.stochastic_rounding;
  if (c.method != "none") j["error_feedback"] = c.error_feedback;
  return j;
}

UpdateEncoding EncodingOf(const CompressionConfig& c) {
  if (c.method == "int8") return {CompressionMethod::kInt8, 0};
  if (c.method == "topk") return {CompressionMethod::kTopK, c.topk_fraction};
  return {};
}

const char* CompressionMethodName(CompressionMethod method) {
  switch (method) {
    case CompressionMethod::kInt8:
      return "int8";
    case CompressionMethod::kTopK:
      return "topk";
    case CompressionMethod::kNone:
      break;
  }
  return "none";
}

std::string DescribeEncoding(const UpdateEncoding& encoding) {
  switch (encoding.method) {
    case CompressionMethod::kInt8:
      return "int8";
    case CompressionMethod::kTopK:
      return absl::StrCat("topk (topk_fraction ", encoding.topk_fraction, ")");
    case CompressionMethod::kNone:
      break;
  }
  return "none (float32)";
}

size_t TopKEntries(double fraction, size_t n) {
  if (n == 0) return 0;
  const double k = std::ceil(fraction * static_cast<double>(n));
  if (!(k >= 1)) return 1;
  return k >= static_cast<double>(n) ? n : static_cast<size_t>(k);
}

void EncodeChunk(const CompressionConfig& config, std::span<const float> values, uint64_t seed, std::string* out) {
  if (config.method == "int8") {
    EncodeInt8(values, config.stochastic_rounding, seed, out);
  } else if (config.method == "topk") {
    EncodeTopK(values, config.topk_fraction, out);
  } else {
    out->assign(reinterpret_cast<const char*>(values.data()), values.size_bytes());
  }
}

absl::Status DecodeChunk(const UpdateEncoding& encoding, uint32_t index, std::span<const std::byte> payload,
                         std::span<float> out) {
  switch (encoding.method) {
    case CompressionMethod::kInt8:
      return DecodeInt8(index, payload, out);
    case CompressionMethod::kTopK:
      return DecodeTopK(index, encoding.topk_fraction, payload, out);
    case CompressionMethod::kNone:
      break;
  }
  if (payload.size() != out.size_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, ": expected ", out.size_bytes(), " bytes, got ", payload.size()));
  }
  std::memcpy(out.data(), payload.data(), payload.size());
  return absl::OkStatus();
}

size_t EncodedUpdate::payload_bytes() const {
  size_t total = 0;
  for (const std::string& c : chunks) total += c.size();
  return total;
}

absl::StatusOr<EncodedUpdate> CompressUpdate(const CompressionConfig& config, const ParameterSet& delta,
                                             std::span<float> residual, size_t chunk_bytes, uint64_t seed) {
  if (!config.enabled()) {
    return absl::InvalidArgumentError("CompressUpdate: federation.compression.method is none; send the delta as it is");
  }
  if (absl::Status s = delta.manifest().CheckAllFloat32("a compressed update"); !s.ok()) return s;
  const std::span<const float> values = delta.floats();
  if (!residual.empty() && residual.size() != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("error-feedback residual holds ", residual.size(),
                                                   " values, the update ", values.size()));
  }
  if (chunk_bytes == 0 || chunk_bytes % sizeof(float) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("chunk_bytes: expected a positive multiple of 4, got ", chunk_bytes));
  }
  EncodedUpdate encoded;
  encoded.manifest = delta.manifest();
  encoded.chunk_bytes = chunk_bytes;
  encoded.encoding = EncodingOf(config);
  const size_t per_chunk = chunk_bytes / sizeof(float);
  const size_t count = (values.size() + per_chunk - 1) / per_chunk;
  encoded.chunks.resize(count);
  std::vector<float> corrected(std::min(per_chunk, values.size()));
  std::vector<float> decoded(corrected.size());
  for (size_t c = 0; c < count; ++c) {
    const size_t begin = c * per_chunk;
    const size_t n = std::min(per_chunk, values.size() - begin);
    const std::span<float> in = std::span(corrected).first(n);
    for (size_t i = 0; i < n; ++i) in[i] = values[begin + i] + (residual.empty() ? 0.0f : residual[begin + i]);
    EncodeChunk(config, in, seed ^ (0x9e3779b97f4a7c15ULL * (c + 1)), &encoded.chunks[c]);
    // Decoded exactly as the server will: the residual is what the server did not get.
    const std::span<float> out = std::span(decoded).first(n);
    if (absl::Status s = DecodeChunk(encoded.encoding, static_cast<uint32_t>(c),
                                     std::as_bytes(std::span<const char>(encoded.chunks[c])), out);
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("the update does not compress (it holds NaN or Inf values?): ",
                                                     s.message()));
    }
    if (!residual.empty()) {
      for (size_t i = 0; i < n; ++i) residual[begin + i] = in[i] - out[i];
    }
  }
  return encoded;
}

}  // namespace cohort::core
