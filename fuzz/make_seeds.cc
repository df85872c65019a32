// Writes the seed inputs of the fuzz targets whose files only the code can write (a
// checkpoint, a signed audit log, a privacy ledger, an upload, IDX files) into
// fuzz/corpus/<target>/, each in the input layout its harness describes. Run it again
// when one of those formats changes: `build-fuzz/fuzz/make_fuzz_seeds fuzz/corpus`.
// The job config and CSV seeds are plain files written by hand.

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "audit/writer.h"
#include "core/checkpoint.h"
#include "crypto/signing.h"
#include "fuzz/fuzz_scratch.h"
#include "privacy/ledger.h"

namespace {

using namespace cohort;
namespace fs = std::filesystem;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void Seed(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  fuzz::WriteWholeFile(dir / name, bytes);
  std::printf("%s (%zu bytes)\n", (dir / name).c_str(), bytes.size());
}

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, std::string(status.message()).c_str());
    std::exit(1);
  }
}

void CheckpointSeeds(const fs::path& out, const fs::path& scratch) {
  core::CheckpointKey key;  // checkpoint_fuzzer.cc's: bytes 1..32
  for (size_t i = 0; i < key.bytes.size(); ++i) key.bytes[i] = static_cast<std::byte>(i + 1);
  core::Manifest manifest({{"fc.weight", core::DType::kFloat32, {2, 3}}, {"fc.bias", core::DType::kFloat32, {2}}});
  core::ParameterSet model(manifest);
  float* values = reinterpret_cast<float*>(model.bytes().data());
  for (int i = 0; i < 8; ++i) values[i] = 0.25f * static_cast<float>(i) - 1.0f;
  const nlohmann::json summary = {{"rounds", {{{"round", 1}, {"accuracy", 0.5}}, {{"round", 2}, {"accuracy", 0.75}}}}};
  Check(core::WriteCheckpoint(scratch / "ck", "mnist", 2, 2, summary, model, key), "checkpoint");
  // The first byte asks the harness to recompute the MAC (odd) or leave it (even).
  Seed(out / "checkpoint_fuzzer", "two_tensors_mac_fixed", std::string(1, '\1') + ReadAll(scratch / "ck"));
  Seed(out / "checkpoint_fuzzer", "two_tensors_as_written", std::string(1, '\0') + ReadAll(scratch / "ck"));
  Check(core::WriteCheckpoint(scratch / "empty", "job", 0, 0, nlohmann::json::object(), core::ParameterSet(), key),
        "checkpoint");
  Seed(out / "checkpoint_fuzzer", "no_tensors", std::string(1, '\1') + ReadAll(scratch / "empty"));
}

void AuditSeeds(const fs::path& out, const fs::path& scratch) {
  std::array<uint8_t, crypto::kSigningSeedBytes> seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(i + 1);  // the harness's key
  absl::StatusOr<crypto::SigningKey> key = crypto::SigningKey::FromSeed(seed);
  Check(key.status(), "key");
  {
    absl::StatusOr<std::unique_ptr<audit::Writer>> writer = audit::Writer::Open(scratch / "audit.log", *std::move(key));
    Check(writer.status(), "audit writer");
    Check((*writer)->Append({.actor = "server", .role = "server", .action = "job.start",
                             .target = {.job = "mnist"}, .new_value = {{"rounds", 3}}}).status(), "append");
    Check((*writer)->Append({.actor = "alice", .role = "admin", .action = "param.set",
                             .target = {.job = "mnist", .parameter = "training_config.learning_rate"},
                             .old_value = 0.1, .new_value = 0.05, .reason = "slower"}).status(), "append");
    Check((*writer)->Append({.actor = "site-a", .role = "site", .action = "participant.join",
                             .target = {.job = "mnist", .participant = "site-a"},
                             .new_value = {{"samples", 600}, {"tags", {"a", "b"}}}}).status(), "append");
  }
  const std::string log = ReadAll(scratch / "audit.log");
  Seed(out / "audit_log_fuzzer", "three_entries_repaired", std::string(1, '\1') + log);
  Seed(out / "audit_log_fuzzer", "three_entries_as_written", std::string(1, '\0') + log);
  Seed(out / "audit_log_fuzzer", "torn_last_line", std::string(1, '\1') + log.substr(0, log.size() - 40));
}

void LedgerSeeds(const fs::path& out, const fs::path& scratch) {
  {
    absl::StatusOr<std::unique_ptr<privacy::Ledger>> ledger =
        privacy::Ledger::Open((scratch / "ledger").string(), "site-a", {.epsilon = 3.0, .delta = 1e-5});
    Check(ledger.status(), "ledger");
    for (int round = 1; round <= 3; ++round) {
      Check((*ledger)->RecordSpend({.job = "mnist", .round = round, .mechanism = privacy::Mechanism::kDpSgd,
                                    .sampling_rate = 0.01, .noise_multiplier = 1.1, .steps = 50, .clip_norm = 1.0})
                .status(),
            "spend");
    }
  }
  const std::string text = ReadAll(scratch / "ledger");
  Seed(out / "privacy_ledger_fuzzer", "three_spends_repaired", std::string(1, '\1') + text);
  Seed(out / "privacy_ledger_fuzzer", "three_spends_as_written", std::string(1, '\0') + text);
  Seed(out / "privacy_ledger_fuzzer", "header_only", std::string(1, '\1') + text.substr(0, text.find('\n') + 1));
}

// The upload layout of update_receiver_fuzzer.cc: a complete, valid upload.
void UploadSeeds(const fs::path& out) {
  std::string in;
  in += '\x01';                   // two tensors
  in += '\x07';                   // 8 floats
  in += '\x03';                   // 4 floats
  in += '\x07';                   // chunk_bytes 32: 48 bytes in two chunks
  in += static_cast<char>(1 | 4);  // right count, no norm bound, finish
  const float values[12] = {0.5f, -1, 2, 0, 0.125f, 3, -0.75f, 1, 4, -2, 0.5f, 0.25f};
  const std::string floats(reinterpret_cast<const char*>(values), sizeof(values));
  for (int chunk = 0; chunk < 2; ++chunk) {
    const std::string payload = floats.substr(32 * chunk, chunk == 0 ? 32 : 16);
    in += static_cast<char>(1 | 4 | 8 | (chunk == 1 ? 2 : 0));  // sealed, expected index and count
    in += '\0';
    in += '\0';
    in += static_cast<char>(payload.size());
    in += '\0';
    in += payload;
  }
  Seed(out / "update_receiver_fuzzer", "two_chunks_complete", in);
  Seed(out / "update_receiver_fuzzer", "first_chunk_only", in.substr(0, 5 + 5 + 32));
}

// The layout of idx_reader_fuzzer.cc: 3 images of 4 x 5 pixels and their labels, raw and
// gzip'd.
void IdxSeeds(const fs::path& out) {
  std::string images = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
  for (int i = 0; i < 60; ++i) images += static_cast<char>(i * 4);
  const std::string labels = {0, 0, 8, 1, 0, 0, 0, 3, 0, 9, 4};
  std::string header(5, '\0');
  header[1] = static_cast<char>(images.size());
  Seed(out / "idx_reader_fuzzer", "three_images_raw", header + images + labels);
  header[0] = 3 | 4;  // both gzip'd, test split
  Seed(out / "idx_reader_fuzzer", "three_images_gzipped", header + images + labels);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  const fs::path scratch = fuzz::ScratchDir();
  CheckpointSeeds(out, scratch);
  AuditSeeds(out, scratch);
  LedgerSeeds(out, scratch);
  UploadSeeds(out);
  IdxSeeds(out);
  return 0;
}
