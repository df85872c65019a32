#include "core/checkpoint.h"

#include <zlib.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "storage/atomic_write.h"
#include "core/bounded_json.h"
#include "core/quote.h"

namespace cohort::core {
namespace {

constexpr char kMagic[8] = {'C', 'O', 'H', 'O', 'R', 'T', 'C', 'K'};
constexpr uint32_t kVersion = 1;

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

absl::Status WriteCheckpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  return WriteCheckpoint(path, checkpoint.job, checkpoint.round, checkpoint.model_version, checkpoint.summary,
                         checkpoint.model);
}

absl::Status WriteCheckpoint(const std::filesystem::path& path, const std::string& job, uint64_t round,
                             uint64_t model_version, const nlohmann::json& summary, const ParameterSet& model) {
  const nlohmann::json header = {{"job", job},
                                 {"round", round},
                                 {"model_version", model_version},
                                 {"manifest", ManifestToJson(model.manifest())},
                                 {"summary", summary}};
  const std::string header_text = header.dump();
  std::string prefix(kMagic, sizeof(kMagic));
  PutU32(prefix, kVersion);
  PutU32(prefix, static_cast<uint32_t>(header_text.size()));
  prefix += header_text;
  return storage::WriteFileAtomically(path, [&](const storage::ByteSink& sink) -> absl::Status {
    uLong crc = crc32(0L, Z_NULL, 0);
    auto put = [&](std::span<const std::byte> bytes) -> absl::Status {
      // zlib takes uInt lengths: feed the CRC in pieces for models over 4 GiB.
      for (size_t off = 0; off < bytes.size(); off += (1u << 30)) {
        const size_t len = std::min<size_t>(bytes.size() - off, 1u << 30);
        crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + off), static_cast<uInt>(len));
      }
      return sink(bytes);
    };
    if (absl::Status s = put(std::as_bytes(std::span(prefix))); !s.ok()) return s;
    if (absl::Status s = put(model.bytes()); !s.ok()) return s;
    std::string trailer;
    PutU32(trailer, static_cast<uint32_t>(crc));
    return sink(std::as_bytes(std::span(trailer)));
  });
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::filesystem::path& path) {
  absl::StatusOr<std::string> contents = storage::ReadFile(path);
  if (!contents.ok()) return contents.status();
  const std::string& data = *contents;
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path.string(), " is corrupt: ", why,
                                            "; delete it to start the job from round 1"));
  };
  if (data.size() < 20 || std::memcmp(data.data(), kMagic, sizeof(kMagic)) != 0) return corrupt("bad magic");
  if (GetU32(data.data() + 8) != kVersion) return corrupt("unknown format version");
  const size_t header_len = GetU32(data.data() + 12);
  if (16 + header_len + 4 > data.size()) return corrupt("header length past end of file");
  const uint32_t stored_crc = GetU32(data.data() + data.size() - 4);
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data.data()),
                          static_cast<uInt>(data.size() - 4));
  if (stored_crc != static_cast<uint32_t>(crc)) return corrupt("CRC mismatch");
  absl::StatusOr<nlohmann::json> parsed =
      ParseBoundedJson(std::string_view(data).substr(16, header_len), kCheckpointHeaderJson, "header");
  if (!parsed.ok()) return corrupt(parsed.status().message());
  const nlohmann::json& header = *parsed;
  // Typed before any value() below, which would throw on a member of the wrong type.
  auto wrong = [&](const char* key, bool (nlohmann::json::*is)() const noexcept) {
    return header.contains(key) && !(header[key].*is)();
  };
  if (!header.is_object() || wrong("job", &nlohmann::json::is_string) ||
      wrong("round", &nlohmann::json::is_number_unsigned) ||
      wrong("model_version", &nlohmann::json::is_number_unsigned) || wrong("summary", &nlohmann::json::is_object)) {
    return corrupt("header: expected an object with job (a string), round and model_version (integers >= 0), "
                   "manifest (an array) and summary (an object)");
  }
  absl::StatusOr<Manifest> manifest = ManifestFromJson(header.value("manifest", nlohmann::json()));
  if (!manifest.ok()) return corrupt(manifest.status().message());
  const size_t model_bytes = manifest->total_bytes();
  if (16 + header_len + model_bytes + 4 != data.size()) return corrupt("model size does not match manifest");
  Checkpoint checkpoint;
  checkpoint.job = header.value("job", "");
  checkpoint.round = header.value("round", uint64_t{0});
  checkpoint.model_version = header.value("model_version", uint64_t{0});
  checkpoint.summary = header.value("summary", nlohmann::json::object());
  checkpoint.model = ParameterSet(std::move(*manifest));
  std::memcpy(checkpoint.model.bytes().data(), data.data() + 16 + header_len, model_bytes);
  return checkpoint;
}

}  // namespace cohort::core
