#include "core/checkpoint.h"

#include <zlib.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/atomic_file.h"

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
  for (const nlohmann::json& t : json) {
    if (!t.is_object() || !t.contains("name") || !t.contains("dtype") || !t.contains("shape")) {
      return absl::InvalidArgumentError("manifest: each tensor needs name, dtype and shape");
    }
    absl::StatusOr<DType> dtype = ParseDType(t["dtype"].get<std::string>());
    if (!dtype.ok()) return dtype.status();
    tensors.push_back({t["name"].get<std::string>(), *dtype, t["shape"].get<std::vector<int64_t>>()});
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
  return WriteFileAtomically(path, [&](const ByteSink& sink) -> absl::Status {
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
  absl::StatusOr<std::string> contents = ReadFileToString(path);
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
  nlohmann::json header = nlohmann::json::parse(data.substr(16, header_len), nullptr, false);
  if (header.is_discarded()) return corrupt("header is not JSON");
  absl::StatusOr<Manifest> manifest = ManifestFromJson(header.value("manifest", nlohmann::json()));
  if (!manifest.ok()) return corrupt(manifest.status().message());
  Checkpoint checkpoint;
  checkpoint.job = header.value("job", "");
  checkpoint.round = header.value("round", uint64_t{0});
  checkpoint.model_version = header.value("model_version", uint64_t{0});
  checkpoint.summary = header.value("summary", nlohmann::json::object());
  checkpoint.model = ParameterSet(std::move(*manifest));
  const size_t model_bytes = checkpoint.model.manifest().total_bytes();
  if (16 + header_len + model_bytes + 4 != data.size()) return corrupt("model size does not match manifest");
  std::memcpy(checkpoint.model.bytes().data(), data.data() + 16 + header_len, model_bytes);
  return checkpoint;
}

}  // namespace cohort::core
