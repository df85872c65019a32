#pragma once
// Server checkpoint: the global model after a completed round plus the job's progress, so
// a restarted server resumes at the next round. One file, replaced atomically.
//
// Layout (integers little-endian):
//   "COHORTCK"            8 bytes magic
//   format version        u32 (1)
//   header length H       u32
//   header                H bytes of JSON: {"job", "round", "model_version", "manifest":
//                         [{"name","dtype","shape"}...], "summary": {...}}
//   model                 manifest.total_bytes() bytes, tensors in manifest order
//   crc32                 u32 over every byte before it (zlib's CRC-32)

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::core {

struct Checkpoint {
  std::string job;
  uint64_t round = 0;  // last completed round
  uint64_t model_version = 0;
  nlohmann::json summary = nlohmann::json::object();
  ParameterSet model;
};

nlohmann::json ManifestToJson(const Manifest& manifest);
absl::StatusOr<Manifest> ManifestFromJson(const nlohmann::json& json);

absl::Status WriteCheckpoint(const std::filesystem::path& path, const Checkpoint& checkpoint);
// The same file, written from the model where it lies: the server checkpoints after every
// round and a Checkpoint would cost one extra copy of the model at peak memory.
absl::Status WriteCheckpoint(const std::filesystem::path& path, const std::string& job, uint64_t round,
                             uint64_t model_version, const nlohmann::json& summary, const ParameterSet& model);
// Fails with DataLoss naming the file when the magic, version, lengths or CRC are wrong.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::filesystem::path& path);

}  // namespace cohort::core
