#include "client/update_residual.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/parameter_set.h"
#include "core/update_compression.h"
#include "storage/atomic_write.h"
#include "tests/temp_dir.h"

namespace cohort::client {
namespace {

using ::testing::HasSubstr;
using cohort::testing::TempDir;

std::vector<float> Ramp(size_t n, float step) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = step * static_cast<float>(i);
  return v;
}

TEST(UpdateResidualTest, StartsAtZeroAndSurvivesAReload) {
  TempDir dir;
  absl::StatusOr<UpdateResidual> residual = UpdateResidual::Load(dir.path(), "job-a", "site-1", 100);
  ASSERT_TRUE(residual.ok()) << residual.status();
  EXPECT_EQ(residual->round(), 0u);
  for (float v : residual->values()) EXPECT_EQ(v, 0.0f);
  EXPECT_FALSE(std::filesystem::exists(residual->path()));  // nothing written until an update is accepted

  const std::vector<float> values = Ramp(100, 0.25f);
  ASSERT_TRUE(residual->Save(3, values).ok());
  absl::StatusOr<UpdateResidual> reloaded = UpdateResidual::Load(dir.path(), "job-a", "site-1", 100);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->round(), 3u);
  EXPECT_EQ(std::vector<float>(reloaded->values().begin(), reloaded->values().end()), values);
  // Keyed by job: another job at the same site starts from zeros.
  absl::StatusOr<UpdateResidual> other = UpdateResidual::Load(dir.path(), "job-b", "site-1", 100);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->round(), 0u);
  EXPECT_EQ(other->values()[99], 0.0f);
}

TEST(UpdateResidualTest, ErrorFeedbackCarriesAcrossARestart) {
  // Two rounds of top-k with feedback in one process, against one round, a restart (the
  // residual reloaded from disk), and the second round: the same bytes are sent.
  TempDir straight_dir, restarted_dir;
  core::CompressionConfig topk;
  topk.method = "topk";
  topk.topk_fraction = 0.05;
  core::Manifest manifest({{"w", core::DType::kFloat32, {500}}});
  core::ParameterSet round1(manifest), round2(manifest);
  for (size_t i = 0; i < 500; ++i) {
    round1.floats()[i] = 0.001f * static_cast<float>((i * 37) % 101) - 0.05f;
    round2.floats()[i] = 0.001f * static_cast<float>((i * 53) % 97) - 0.04f;
  }
  auto run_round = [&](const std::filesystem::path& dir, uint64_t round, const core::ParameterSet& delta) {
    absl::StatusOr<UpdateResidual> residual = UpdateResidual::Load(dir, "job-a", "site-1", 500);
    EXPECT_TRUE(residual.ok());
    std::vector<float> next(residual->values().begin(), residual->values().end());
    absl::StatusOr<core::EncodedUpdate> encoded = core::CompressUpdate(topk, delta, next, 1024, round);
    EXPECT_TRUE(encoded.ok());
    EXPECT_TRUE(residual->Save(round, next).ok());
    return encoded->chunks;
  };
  // Straight through: one residual in memory for both rounds.
  std::vector<float> in_memory(500, 0.0f);
  ASSERT_TRUE(core::CompressUpdate(topk, round1, in_memory, 1024, 1).ok());
  absl::StatusOr<core::EncodedUpdate> straight = core::CompressUpdate(topk, round2, in_memory, 1024, 2);
  ASSERT_TRUE(straight.ok());
  // Restarted: each round loads the residual the last one saved.
  run_round(restarted_dir.path(), 1, round1);
  const std::vector<std::string> after_restart = run_round(restarted_dir.path(), 2, round2);
  EXPECT_EQ(after_restart, straight->chunks);
  // And the feedback did change what was sent: without the residual, round 2 differs.
  absl::StatusOr<core::EncodedUpdate> forgetful = core::CompressUpdate(topk, round2, {}, 1024, 2);
  ASSERT_TRUE(forgetful.ok());
  EXPECT_NE(forgetful->chunks, straight->chunks);
}

TEST(UpdateResidualTest, ACorruptFileIsRefusedNamingItAndTheFix) {
  TempDir dir;
  absl::StatusOr<UpdateResidual> residual = UpdateResidual::Load(dir.path(), "job-a", "site-1", 10);
  ASSERT_TRUE(residual.ok());
  ASSERT_TRUE(residual->Save(1, Ramp(10, 1.0f)).ok());
  const std::filesystem::path path = residual->path();
  absl::StatusOr<std::string> good = storage::ReadFile(path);
  ASSERT_TRUE(good.ok());

  std::string flipped = *good;
  flipped.back() ^= 0x01;  // one bit of the last value
  std::string cut = good->substr(0, good->size() - 3);
  for (const std::string& bad : {flipped, cut, std::string("not json\n"), std::string("{}")}) {
    ASSERT_TRUE(storage::WriteFileAtomically(path, bad).ok());
    absl::StatusOr<UpdateResidual> loaded = UpdateResidual::Load(dir.path(), "job-a", "site-1", 10);
    ASSERT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_THAT(loaded.status().message(), HasSubstr(path.string()));
    EXPECT_THAT(loaded.status().message(), HasSubstr("delete the file"));
  }
  // Another site's residual under this name is not taken as ours.
  ASSERT_TRUE(storage::WriteFileAtomically(path, *good).ok());
  EXPECT_EQ(UpdateResidual::Load(dir.path(), "job-a", "site-2", 10).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A model of another size under the same job name: zeros, and the reason.
  absl::StatusOr<UpdateResidual> resized = UpdateResidual::Load(dir.path(), "job-a", "site-1", 11);
  ASSERT_TRUE(resized.ok());
  EXPECT_THAT(resized->started_over(), HasSubstr("10 values"));
  EXPECT_EQ(resized->values()[9], 0.0f);
}

}  // namespace
}  // namespace cohort::client
