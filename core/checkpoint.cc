#include "core/checkpoint.h"

#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "storage/atomic_write.h"
#include "storage/hmac.h"
#include "core/bounded_json.h"
#include "core/quote.h"

namespace cohort::core {
namespace {

constexpr char kMagic[8] = {'C', 'O', 'H', 'O', 'R', 'T', 'C', 'K'};
// 1 carried a CRC-32 anyone could recompute; 2 carries the server's HMAC.
constexpr uint32_t kVersion = 2;

void PutU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

nlohmann::json ManifestToJson(const Manifest& manifest) {
  nlohmann::json out = nlohmann::json::array();
  for (const TensorSpec& t : manifest.tensors()) {
    out.push_back({{"name", t.name}, {"dtype", std::string(DTypeName(t.dtype))}, {"shape", t.shape}});
  }
  return out;
}

absl::StatusOr<Manifest> ManifestFromJson(const nlohmann::json& json) {
  if (!json.is_array()) return absl::InvalidArgumentError("manifest: expected an array of tensors");
  std::vector<TensorSpec> tensors;
  uint64_t total_bytes = 0;
  for (const nlohmann::json& t : json) {
    const size_t i = tensors.size();
    if (!t.is_object() || !t.contains("name") || !t.contains("dtype") || !t.contains("shape") ||
        !t["name"].is_string() || !t["dtype"].is_string() || !t["shape"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "manifest tensor ", i, ": expected {\"name\": string, \"dtype\": string, \"shape\": [dims]}, got ",
          JsonPrefix(t)));
    }
    absl::StatusOr<DType> dtype = ParseDType(t["dtype"].get<std::string>());
    if (!dtype.ok()) return dtype.status();
    TensorSpec spec{t["name"].get<std::string>(), *dtype, {}};
    for (const nlohmann::json& d : t["shape"]) {
      if (!d.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("manifest tensor ", i, " (", QuotePrefix(spec.name),
                                                       "): expected integer dimensions, got shape ",
                                                       JsonPrefix(t["shape"])));
      }
      spec.shape.push_back(d.get<int64_t>());
    }
    absl::StatusOr<uint64_t> bytes = BoundedTensorBytes(spec.dtype, spec.shape);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest tensor ", i, " (", QuotePrefix(spec.name), "): ", bytes.status().message()));
    }
    total_bytes += *bytes;
    if (total_bytes > kMaxModelBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest: expected a model of at most ", kMaxModelBytes, " bytes, tensors 0 to ", i,
                       " already hold ", total_bytes));
    }
    tensors.push_back(std::move(spec));
  }
  return Manifest(std::move(tensors));
}

absl::Status WriteCheckpoint(const std::filesystem::path& path, const Checkpoint& checkpoint, const CheckpointKey& key) {
  return WriteCheckpoint(path, checkpoint.job, checkpoint.round, checkpoint.model_version, checkpoint.summary,
                         checkpoint.model, key);
}

absl::Status WriteCheckpoint(const std::filesystem::path& path, const std::string& job, uint64_t round,
                             uint64_t model_version, const nlohmann::json& summary, const ParameterSet& model,
                             const CheckpointKey& key) {
  const std::string text = summary.dump();
  const std::string_view parts[] = {text};
  return WriteCheckpointWithSummaryText(path, job, round, model_version, parts, model, key);
}

absl::Status WriteCheckpointWithSummaryText(const std::filesystem::path& path, const std::string& job, uint64_t round,
                                            uint64_t model_version, std::span<const std::string_view> summary_json,
                                            const ParameterSet& model, const CheckpointKey& key) {
  size_t summary_size = 0;
  std::string_view first, last;  // the first and last parts that are not empty
  for (std::string_view part : summary_json) {
    summary_size += part.size();
    if (part.empty()) continue;
    if (first.empty()) first = part;
    last = part;
  }
  if (summary_size < 2 || first.front() != '{' || last.back() != '}') {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path.string(),
                                                   ": the summary must be a JSON object's text, got ", summary_size,
                                                   " bytes starting with ", QuotePrefix(first, 16)));
  }
  // The header is {"job","manifest","model_version","round","summary"}: the members before
  // "summary" (json objects keep their keys sorted, and "summary" sorts last) are
  // serialized here, and the summary's text follows them as it is, so the header's bytes
  // are those of header.dump() with the summary in it, without copying the summary.
  const nlohmann::json head = {{"job", job},
                               {"round", round},
                               {"model_version", model_version},
                               {"manifest", ManifestToJson(model.manifest())}};
  std::string head_text = head.dump();
  head_text.pop_back();  // its closing '}'
  head_text += ",\"summary\":";
  const size_t header_size = head_text.size() + summary_size + 1;
  if (header_size > kCheckpointHeaderJson.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path.string(), ": the header is ", header_size,
                                                   " bytes, over the ", kCheckpointHeaderJson.max_bytes,
                                                   " a reader accepts"));
  }
  std::string prefix(kMagic, sizeof(kMagic));
  PutU32(prefix, kVersion);
  PutU32(prefix, static_cast<uint32_t>(header_size));
  return storage::WriteFileAtomically(path, [&](const storage::ByteSink& sink) -> absl::Status {
    storage::HmacSha256 mac(key.bytes);
    auto put = [&](std::span<const std::byte> bytes) -> absl::Status {
      mac.Update(bytes);
      return sink(bytes);
    };
    // The header's parts (the summary's: one per round) gathered into writes of up to
    // kWriteBytes, in a buffer whose size does not grow with the summary.
    constexpr size_t kWriteBytes = 64 << 10;
    std::string pending;
    pending.reserve(kWriteBytes);
    auto put_part = [&](std::string_view part) -> absl::Status {
      if (pending.size() + part.size() > kWriteBytes) {
        if (absl::Status s = put(std::as_bytes(std::span(pending))); !s.ok()) return s;
        pending.clear();
      }
      if (part.size() >= kWriteBytes) return put(std::as_bytes(std::span(part)));
      pending += part;
      return absl::OkStatus();
    };
    for (std::string_view part : {std::string_view(prefix), std::string_view(head_text)}) {
      if (absl::Status s = put_part(part); !s.ok()) return s;
    }
    for (std::string_view part : summary_json) {
      if (absl::Status s = put_part(part); !s.ok()) return s;
    }
    if (absl::Status s = put_part("}"); !s.ok()) return s;
    if (absl::Status s = put(std::as_bytes(std::span(pending))); !s.ok()) return s;
    if (absl::Status s = put(model.bytes()); !s.ok()) return s;
    const storage::HmacSha256Tag tag = mac.Finish();
    return sink(std::as_bytes(std::span(tag)));
  });
}

namespace {

// NaN or infinity in a tensor of floating type: the index of the first, or nullopt.
template <typename T>
std::optional<size_t> FirstNonFinite(const char* data, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, data + i * sizeof(T), sizeof(T));
    if (!std::isfinite(v)) return i;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::filesystem::path& path, const CheckpointKey& key) {
  absl::StatusOr<std::string> contents = storage::ReadFile(path);
  if (!contents.ok()) return contents.status();
  const std::string& data = *contents;
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path.string(), " is corrupt: ", why,
                                            "; delete it to start the job from round 1"));
  };
  constexpr size_t kPrefix = 16, kMac = storage::kHmacSha256Bytes;
  if (data.size() < kPrefix + kMac || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("bad magic");
  }
  if (GetU32(data.data() + 8) != kVersion) {
    return corrupt(absl::StrCat("format version ", GetU32(data.data() + 8), ", expected ", kVersion,
                                " (an authenticated checkpoint)"));
  }
  // Authenticated before anything in it is believed: a forged file gets no further.
  {
    storage::HmacSha256 mac(key.bytes);
    mac.Update(std::string_view(data).substr(0, data.size() - kMac));
    const storage::HmacSha256Tag tag = mac.Finish();
    if (!storage::HmacTagsEqual(std::as_bytes(std::span(tag)),
                                std::as_bytes(std::span(data.data() + data.size() - kMac, kMac)))) {
      return absl::DataLossError(absl::StrCat(
          "checkpoint ", path.string(),
          " does not carry this server's MAC: it was altered, or written by another server or under another key "
          "(the server's kit or STATE/checkpoint.key changed); it is not used. Delete it to start the job from "
          "round 1, or resume with the server key that wrote it"));
    }
  }
  const size_t header_len = GetU32(data.data() + 12);
  if (header_len > kCheckpointHeaderJson.max_bytes) return corrupt("header longer than a checkpoint header may be");
  if (kPrefix + header_len + kMac > data.size()) return corrupt("header length past end of file");
  absl::StatusOr<nlohmann::json> parsed =
      ParseBoundedJson(std::string_view(data).substr(kPrefix, header_len), kCheckpointHeaderJson, "header");
  if (!parsed.ok()) return corrupt(parsed.status().message());
  const nlohmann::json& header = *parsed;
  // Typed before any value() below, which would throw on a member of the wrong type.
  auto is = [&](const char* key_name, bool (nlohmann::json::*check)() const noexcept) {
    return header.contains(key_name) && (header[key_name].*check)();
  };
  if (!header.is_object() || !is("job", &nlohmann::json::is_string) ||
      !is("round", &nlohmann::json::is_number_unsigned) || !is("model_version", &nlohmann::json::is_number_unsigned) ||
      !is("manifest", &nlohmann::json::is_array) || !is("summary", &nlohmann::json::is_object)) {
    return corrupt("header: expected an object with job (a string), round and model_version (integers >= 0), "
                   "manifest (an array) and summary (an object)");
  }
  const uint64_t round = header["round"].get<uint64_t>();
  const uint64_t model_version = header["model_version"].get<uint64_t>();
  if (model_version != round) {
    return corrupt(absl::StrCat("model_version ", model_version, " after round ", round,
                                ": every completed round makes exactly one version"));
  }
  const nlohmann::json& summary = header["summary"];
  if (summary.contains("rounds")) {
    const nlohmann::json& rounds = summary["rounds"];
    if (!rounds.is_array() || rounds.size() > round) {
      return corrupt(absl::StrCat("summary.rounds: expected an array of at most ", round, " rounds"));
    }
    for (const nlohmann::json& r : rounds) {
      if (!r.is_object() || (r.contains("round") && !(r["round"].is_number_unsigned() &&
                                                      r["round"].get<uint64_t>() >= 1 &&
                                                      r["round"].get<uint64_t>() <= round))) {
        return corrupt(absl::StrCat("summary.rounds: expected objects with a round from 1 to ", round, ", got ",
                                    JsonPrefix(r)));
      }
    }
  }
  absl::StatusOr<Manifest> manifest = ManifestFromJson(header["manifest"]);
  if (!manifest.ok()) return corrupt(manifest.status().message());
  const size_t model_bytes = manifest->total_bytes();
  if (kPrefix + header_len + model_bytes + kMac != data.size()) return corrupt("model size does not match manifest");
  const char* model_data = data.data() + kPrefix + header_len;
  size_t offset = 0;
  for (const TensorSpec& t : manifest->tensors()) {
    const size_t count = t.num_elements();
    std::optional<size_t> bad;
    if (t.dtype == DType::kFloat32) bad = FirstNonFinite<float>(model_data + offset, count);
    if (t.dtype == DType::kFloat64) bad = FirstNonFinite<double>(model_data + offset, count);
    if (bad) {
      return corrupt(absl::StrCat("tensor ", QuotePrefix(t.name), " holds a NaN or infinity at element ", *bad));
    }
    offset += t.num_bytes();
  }
  Checkpoint checkpoint;
  checkpoint.job = header["job"].get<std::string>();
  checkpoint.round = round;
  checkpoint.model_version = model_version;
  checkpoint.summary = summary;
  checkpoint.model = ParameterSet(std::move(*manifest));
  // An empty model has no buffer: memcpy from or to a null pointer is undefined even for 0 bytes.
  if (model_bytes > 0) std::memcpy(checkpoint.model.bytes().data(), model_data, model_bytes);
  return checkpoint;
}

}  // namespace cohort::core
