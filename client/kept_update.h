#pragma once
// The update of a site's last DP-SGD round, kept on disk beside its privacy ledger before
// it is sent, so that each recorded spend pays for one release and no more.
//
// DP-SGD noise comes from the OS's secure randomness: training a round again releases a
// second, different noisy update, which the ledger would rightly charge a second time. A
// round is asked for again whenever something failed after the site trained: the site was
// killed before or while it sent its update, the server was killed before its checkpoint
// (the resumed server runs the round again), or the round was retried because too few
// sites reported. So before an update leaves the site it is written here (atomically,
// fsync'd), and the agent (client/agent.cc) answers a round it has kept, for the same job,
// round and global model, with these same bytes: nothing new is released and nothing new
// is spent. A spend recorded by a process that died before its update was kept was never
// released either: the ledger's last spend, for this job and round, with no update kept
// for it, is trained under instead of spending again.
//
// File (PATH = LEDGER.kept-update): one line of JSON, then the delta's raw bytes.
//   {"job", "round", "global_sha256", "spend_seq", "manifest": [...], "delta_sha256",
//    "metrics": {...}, "spend": {"sampling_rate", "noise_multiplier", "steps", "clip_norm",
//    "epsilon_after"}}\n
//   delta                 manifest.total_bytes() bytes, tensors in manifest order
// The site's own file, next to its data: it is read with the same bounds as any other
// (core::kCheckpointHeaderJson, core::ManifestFromJson) and its bytes checked against
// delta_sha256; one that does not read is treated as possibly released (spend again).

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "proto/cohort.pb.h"

namespace cohort::client {

// What the kept update is for and what was reported with it.
struct KeptRound {
  std::string job;
  uint64_t round = 0;
  std::string global_sha256;  // hex SHA-256 of the global model it was trained from
  int64_t spend_seq = 0;      // the ledger spend (1-based) that paid for it
  core::TrainMetrics metrics;
  v1::PrivacySpend spend;
};

struct KeptUpdate {
  KeptRound round;
  core::ParameterSet delta;
};

// Where the kept update of the ledger at `ledger_path` lives.
std::filesystem::path KeptUpdatePath(const std::filesystem::path& ledger_path);

// Replaces the file atomically (storage::WriteFileAtomically: written, fsync'd, renamed).
absl::Status SaveKeptUpdate(const std::filesystem::path& path, const KeptRound& round, const core::ParameterSet& delta);

// NotFound when there is none; DataLoss naming the file when it does not read.
absl::StatusOr<KeptUpdate> LoadKeptUpdate(const std::filesystem::path& path);

}  // namespace cohort::client
