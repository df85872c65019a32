#pragma once
// The site's error-feedback residual for one job (core/update_compression.h): what
// compression has left out of its updates so far, added to its next update before that is
// compressed. It lives in the site's state directory (beside its privacy ledger), one file
// per job, rewritten whole after each accepted update through storage::WriteFileAtomically,
// so a site that restarts carries on where its last accepted update left it, and a crash
// leaves the old file or the new one, never a mix.
//
// File `residual-<job>.bin`, written and read only here:
//   line 1   JSON: {"format": "cohort-residual-1", "job": J, "site": S, "round": R,
//            "values": N, "sha256": lowercase hex SHA-256 of the N values' bytes}
//   then     N float32, little-endian, in manifest order (exactly 4N bytes)
// R is the round of the last accepted update the residual follows.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::client {

class UpdateResidual {
 public:
  // The residual of `job` at `site` for a model of `values` floats, from `dir`. No file:
  // zeros. A file for another number of values (the job's model changed under the same
  // name): zeros, and started_over() says why. DataLoss naming the file when it is corrupt
  // (bad header, wrong length, digest mismatch), FailedPrecondition when it names another
  // job or site: delete the file to start again from zeros.
  static absl::StatusOr<UpdateResidual> Load(const std::filesystem::path& dir, const std::string& job,
                                             const std::string& site, size_t values);

  // Where this residual is kept.
  const std::filesystem::path& path() const { return path_; }
  // The round of the last accepted update it follows; 0: none yet.
  uint64_t round() const { return round_; }
  // Non-empty when a file existed but could not be carried on (why).
  const std::string& started_over() const { return started_over_; }
  std::span<const float> values() const { return values_; }

  // Replaces the residual with `values` (one per value of the model) as of `round`, on disk
  // first: when this fails, nothing changed.
  absl::Status Save(uint64_t round, std::span<const float> values);

 private:
  UpdateResidual(std::filesystem::path path, std::string job, std::string site, size_t values)
      : path_(std::move(path)), job_(std::move(job)), site_(std::move(site)), values_(values, 0.0f) {}

  std::filesystem::path path_;
  std::string job_;
  std::string site_;
  uint64_t round_ = 0;
  std::string started_over_;
  std::vector<float> values_;
};

}  // namespace cohort::client
