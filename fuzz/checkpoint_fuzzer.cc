// Fuzzes the checkpoint reader (core::ReadCheckpoint) with the file written from the
// input. The reader checks the file's HMAC-SHA256 trailer before it parses anything, so a
// mutation would almost never get past it: when the input's first byte is odd the harness
// computes the trailer under its own key, as the server holding the key would, and the
// header JSON, the manifest, the sizes and the model behind the MAC are what gets fuzzed.
// The file is the input without that first byte.
//
// Properties beyond "no crash, leak or hang": a checkpoint that reads back writes
// (core::WriteCheckpoint) and reads again to the same job, round, version, summary and
// model bytes.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/checkpoint.h"
#include "fuzz/fuzz_scratch.h"
#include "storage/hmac.h"

namespace {

// The harness's checkpoint key: bytes 1..32 (fuzz/make_seeds.cc writes the seeds under it).
const cohort::core::CheckpointKey& HarnessKey() {
  static const cohort::core::CheckpointKey key = [] {
    cohort::core::CheckpointKey k;
    for (size_t i = 0; i < k.bytes.size(); ++i) k.bytes[i] = static_cast<std::byte>(i + 1);
    return k;
  }();
  return key;
}

void FixMac(std::string& file) {
  if (file.size() < cohort::storage::kHmacSha256Bytes) return;
  const size_t body = file.size() - cohort::storage::kHmacSha256Bytes;
  const cohort::storage::HmacSha256Tag tag =
      cohort::storage::HmacSha256(HarnessKey().bytes).Update(std::string_view(file).substr(0, body)).Finish();
  std::memcpy(file.data() + body, tag.data(), tag.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cohort;
  if (size == 0) return 0;
  std::string file(fuzz::AsText(data + 1, size - 1));
  if (data[0] & 1) FixMac(file);
  const std::filesystem::path path = fuzz::ScratchDir() / "checkpoint.bin";
  fuzz::WriteWholeFile(path, file);
  absl::StatusOr<core::Checkpoint> read = core::ReadCheckpoint(path, HarnessKey());
  if (!read.ok()) return 0;

  const std::filesystem::path again_path = fuzz::ScratchDir() / "again.bin";
  if (absl::Status s = core::WriteCheckpoint(again_path, *read, HarnessKey()); !s.ok()) {
    fuzz::PropertyFailed(std::string("a checkpoint that was read cannot be written: ") + std::string(s.message()));
  }
  absl::StatusOr<core::Checkpoint> again = core::ReadCheckpoint(again_path, HarnessKey());
  if (!again.ok()) {
    fuzz::PropertyFailed(std::string("a rewritten checkpoint does not read: ") + std::string(again.status().message()));
  }
  const auto a = read->model.bytes(), b = again->model.bytes();
  if (again->job != read->job || again->round != read->round || again->model_version != read->model_version ||
      again->summary != read->summary || a.size() != b.size() ||
      (a.size() > 0 && std::memcmp(a.data(), b.data(), a.size()) != 0)) {
    fuzz::PropertyFailed("a checkpoint does not survive WriteCheckpoint and ReadCheckpoint");
  }
  return 0;
}
