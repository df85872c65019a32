#pragma once
// Server checkpoint: the global model after a completed round plus the job's progress, so
// a restarted server resumes at the next round. One file, replaced atomically.
//
// A checkpoint is read back by the server that wrote it, and by nobody else: anyone who can
// write the output directory could otherwise hand the server a model, a round number and
// an aggregation state of their choosing. So it is authenticated with the server's key
// (HMAC-SHA256, storage/hmac.h) and the MAC is checked before any byte of it is parsed;
// then every field is checked before anything is allocated from it.
//
// Layout (integers little-endian):
//   "COHORTCK"            8 bytes magic
//   format version        u32 (2)
//   header length H       u32, at most core::kCheckpointHeaderJson.max_bytes
//   header                H bytes of JSON: {"job", "round", "model_version", "manifest":
//                         [{"name","dtype","shape"}...], "summary": {...}}
//   model                 manifest.total_bytes() bytes, tensors in manifest order
//   mac                   32 bytes: HMAC-SHA256 under the checkpoint key of every byte before it
//
// The key: `cohort server` derives it from its startup kit's private key with HKDF-SHA256
// (server/checkpoint_key.h), or with --insecure keeps a random one in STATE/checkpoint.key
// (mode 0600). A checkpoint written under another key is refused like a corrupt one.

#include <array>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::core {

// The secret a checkpoint is authenticated under: 32 bytes only its server knows.
struct CheckpointKey {
  std::array<std::byte, 32> bytes{};
};

struct Checkpoint {
  std::string job;
  uint64_t round = 0;  // last completed round
  uint64_t model_version = 0;
  nlohmann::json summary = nlohmann::json::object();
  ParameterSet model;
};

nlohmann::json ManifestToJson(const Manifest& manifest);
absl::StatusOr<Manifest> ManifestFromJson(const nlohmann::json& json);

absl::Status WriteCheckpoint(const std::filesystem::path& path, const Checkpoint& checkpoint, const CheckpointKey& key);
// The same file, written from the model where it lies: the server checkpoints after every
// round and a Checkpoint would cost one extra copy of the model at peak memory.
absl::Status WriteCheckpoint(const std::filesystem::path& path, const std::string& job, uint64_t round,
                             uint64_t model_version, const nlohmann::json& summary, const ParameterSet& model,
                             const CheckpointKey& key);
// The same file, with the summary already serialized: the parts of `summary_json`, one
// after another, are a JSON object's text (nlohmann::json::dump's), written into the
// header as they are. The server keeps each round of its summary as text
// (server/job_summary.h); serializing a tree, or joining the parts, for each checkpoint
// would copy a summary that grows every round. The bytes are WriteCheckpoint's.
absl::Status WriteCheckpointWithSummaryText(const std::filesystem::path& path, const std::string& job, uint64_t round,
                                            uint64_t model_version, std::span<const std::string_view> summary_json,
                                            const ParameterSet& model, const CheckpointKey& key);
// Fails with DataLoss naming the file, before allocating the model, when the magic,
// version, lengths or MAC are wrong (a file written under another key included), or when
// a field is: the wrong type, a manifest over core::kMaxModelBytes, a model size that is
// not the manifest's, a round or version that do not agree (model_version == round: one
// version per completed round), a summary whose rounds are not objects numbered 1..round,
// or a NaN or infinity in the model. What only the job knows (its rounds) the caller checks.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::filesystem::path& path, const CheckpointKey& key);

}  // namespace cohort::core
