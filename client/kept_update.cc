#include "client/kept_update.h"

#include <algorithm>
#include <cstring>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/bounded_json.h"
#include "core/checkpoint.h"
#include "storage/atomic_write.h"
#include "storage/sha256.h"

namespace cohort::client {
namespace {

// Owner-only, like the ledger beside it: the update is derived from the site's data.
constexpr mode_t kKeptUpdateMode = 0600;

absl::Status Corrupt(const std::filesystem::path& path, absl::string_view why) {
  return absl::DataLossError(absl::StrCat("kept update ", path.string(), ": ", why));
}

}  // namespace

std::filesystem::path KeptUpdatePath(const std::filesystem::path& ledger_path) {
  return std::filesystem::path(ledger_path).concat(".kept-update");
}

absl::Status SaveKeptUpdate(const std::filesystem::path& path, const KeptRound& update,
                            const core::ParameterSet& delta) {
  const std::span<const std::byte> bytes = delta.bytes();
  const nlohmann::json header = {
      {"job", update.job},
      {"round", update.round},
      {"global_sha256", update.global_sha256},
      {"spend_seq", update.spend_seq},
      {"manifest", core::ManifestToJson(delta.manifest())},
      {"delta_sha256", storage::Sha256Hex(bytes)},
      {"metrics",
       {{"train_loss", update.metrics.train_loss},
        {"eval_loss", update.metrics.eval_loss},
        {"eval_accuracy", update.metrics.eval_accuracy},
        {"eval_samples", update.metrics.eval_samples},
        {"train_seconds", update.metrics.train_seconds},
        {"train_cpu_seconds", update.metrics.train_cpu_seconds},
        {"steps", update.metrics.steps},
        {"train_samples", update.metrics.train_samples}}},
      {"spend",
       {{"sampling_rate", update.spend.sampling_rate()},
        {"noise_multiplier", update.spend.noise_multiplier()},
        {"steps", update.spend.steps()},
        {"clip_norm", update.spend.clip_norm()},
        {"epsilon_after", update.spend.epsilon_after()}}}};
  const std::string line = header.dump() + "\n";
  return storage::WriteFileAtomically(
      path,
      [&](const storage::ByteSink& sink) -> absl::Status {
        if (absl::Status s = sink(std::as_bytes(std::span<const char>(line))); !s.ok()) return s;
        return sink(bytes);
      },
      kKeptUpdateMode);
}

absl::StatusOr<KeptUpdate> LoadKeptUpdate(const std::filesystem::path& path) {
  absl::StatusOr<std::string> contents = storage::ReadFile(path);
  if (!contents.ok()) return contents.status();
  const size_t newline = contents->find('\n');
  if (newline == std::string::npos) return Corrupt(path, "no header line");
  absl::StatusOr<nlohmann::json> header = core::ParseBoundedJson(std::string_view(*contents).substr(0, newline),
                                                                 core::kCheckpointHeaderJson, "the header");
  if (!header.ok()) return Corrupt(path, header.status().message());
  try {
    absl::StatusOr<core::Manifest> manifest = core::ManifestFromJson(header->at("manifest"));
    if (!manifest.ok()) return Corrupt(path, manifest.status().message());
    const std::string_view bytes = std::string_view(*contents).substr(newline + 1);
    if (bytes.size() != manifest->total_bytes()) {
      return Corrupt(path, absl::StrCat("holds ", bytes.size(), " bytes of update, its manifest says ",
                                        manifest->total_bytes()));
    }
    if (storage::Sha256Hex(bytes) != header->at("delta_sha256").get<std::string>()) {
      return Corrupt(path, "the update's bytes do not match delta_sha256");
    }
    KeptUpdate kept;
    KeptRound& update = kept.round;
    update.job = header->at("job").get<std::string>();
    update.round = header->at("round").get<uint64_t>();
    update.global_sha256 = header->at("global_sha256").get<std::string>();
    update.spend_seq = header->at("spend_seq").get<int64_t>();
    const nlohmann::json& m = header->at("metrics");
    update.metrics.train_loss = m.at("train_loss").get<double>();
    update.metrics.eval_loss = m.at("eval_loss").get<double>();
    update.metrics.eval_accuracy = m.at("eval_accuracy").get<double>();
    update.metrics.eval_samples = m.at("eval_samples").get<uint64_t>();
    update.metrics.train_seconds = m.at("train_seconds").get<double>();
    update.metrics.train_cpu_seconds = m.value("train_cpu_seconds", 0.0);  // absent in older files
    update.metrics.steps = m.at("steps").get<uint64_t>();
    update.metrics.train_samples = m.at("train_samples").get<uint64_t>();
    const nlohmann::json& s = header->at("spend");
    update.spend.set_sampling_rate(s.at("sampling_rate").get<double>());
    update.spend.set_noise_multiplier(s.at("noise_multiplier").get<double>());
    update.spend.set_steps(s.at("steps").get<int64_t>());
    update.spend.set_clip_norm(s.at("clip_norm").get<double>());
    update.spend.set_epsilon_after(s.at("epsilon_after").get<double>());
    kept.delta = core::ParameterSet(std::move(*manifest));
    std::memcpy(kept.delta.bytes().data(), bytes.data(), bytes.size());
    return kept;
  } catch (const nlohmann::json::exception& e) {
    // A member missing or of the wrong type.
    return Corrupt(path, absl::StrCat("bad header: ", e.what()));
  }
}

}  // namespace cohort::client
