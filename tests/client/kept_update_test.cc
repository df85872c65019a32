// The update a site keeps before it sends a DP-SGD round (client/kept_update.h): it reads
// back exactly, and a file that was cut, edited or never written is told apart, since the
// agent spends the budget again for anything it cannot trust.
#include "client/kept_update.h"

#include <gtest/gtest.h>

#include <fstream>

#include "client/site_ledger.h"
#include "storage/atomic_write.h"
#include "tests/temp_dir.h"

namespace cohort::client {
namespace {

core::ParameterSet Delta() {
  core::ParameterSet delta(core::Manifest({{"fc.weight", core::DType::kFloat32, {3, 4}}, {"fc.bias", core::DType::kFloat32, {3}}}));
  std::span<float> values = delta.floats();
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.25f * static_cast<float>(i) - 1.0f;
  return delta;
}

KeptRound Round7() {
  KeptRound round;
  round.job = "fmnist";
  round.round = 7;
  round.global_sha256 = std::string(64, 'a');
  round.spend_seq = 7;
  round.metrics.train_loss = 0.5;
  round.metrics.steps = 12;
  round.metrics.train_samples = 270;
  round.spend.set_sampling_rate(0.237);
  round.spend.set_noise_multiplier(0.509);
  round.spend.set_steps(5);
  round.spend.set_clip_norm(1.0);
  round.spend.set_epsilon_after(21.9);
  return round;
}

TEST(KeptUpdate, ReadsBackTheSameRoundAndBytes) {
  testing::TempDir dir;
  const std::filesystem::path path = KeptUpdatePath(dir.path() / "privacy-ledger.jsonl");
  EXPECT_EQ(path.filename(), "privacy-ledger.jsonl.kept-update");
  const core::ParameterSet delta = Delta();
  ASSERT_TRUE(SaveKeptUpdate(path, Round7(), delta).ok());
  absl::StatusOr<KeptUpdate> kept = LoadKeptUpdate(path);
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  EXPECT_EQ(kept->round.job, "fmnist");
  EXPECT_EQ(kept->round.round, 7u);
  EXPECT_EQ(kept->round.global_sha256, std::string(64, 'a'));
  EXPECT_EQ(kept->round.spend_seq, 7);
  EXPECT_EQ(kept->round.metrics.steps, 12u);
  EXPECT_EQ(kept->round.spend.noise_multiplier(), 0.509);
  EXPECT_EQ(kept->round.spend.epsilon_after(), 21.9);
  ASSERT_EQ(kept->delta.manifest(), delta.manifest());
  EXPECT_TRUE(std::equal(delta.bytes().begin(), delta.bytes().end(), kept->delta.bytes().begin()));
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(KeptUpdate, NoneKeptIsNotFound) {
  testing::TempDir dir;
  EXPECT_EQ(LoadKeptUpdate(dir.path() / "x.kept-update").status().code(), absl::StatusCode::kNotFound);
}

TEST(KeptUpdate, ACutOrEditedFileIsDataLoss) {
  testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "x.kept-update";
  ASSERT_TRUE(SaveKeptUpdate(path, Round7(), Delta()).ok());
  absl::StatusOr<std::string> whole = storage::ReadFile(path);
  ASSERT_TRUE(whole.ok());

  ASSERT_TRUE(storage::WriteFileAtomically(path, whole->substr(0, whole->size() - 4)).ok());
  absl::StatusOr<KeptUpdate> cut = LoadKeptUpdate(path);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(cut.status().message().find(path.string()), std::string::npos) << cut.status().message();

  std::string edited = *whole;
  edited.back() ^= 0x40;  // one bit of the last float
  ASSERT_TRUE(storage::WriteFileAtomically(path, edited).ok());
  EXPECT_EQ(LoadKeptUpdate(path).status().code(), absl::StatusCode::kDataLoss);

  std::string renamed = *whole;
  renamed.replace(renamed.find("\"round\""), 7, "\"roumd\"");
  ASSERT_TRUE(storage::WriteFileAtomically(path, renamed).ok());
  EXPECT_EQ(LoadKeptUpdate(path).status().code(), absl::StatusCode::kDataLoss);
}

privacy::SpendRequest Spend(const std::string& job, int64_t round) {
  privacy::SpendRequest request;
  request.job = job;
  request.round = round;
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = 0.01;
  request.noise_multiplier = 1.1;
  request.steps = 10;
  request.clip_norm = 1.0;
  return request;
}

// What tells the agent that a reservation found after a restart was never used: it is the
// ledger's last spend, also after the ledger is opened again.
TEST(KeptUpdate, TheLedgerNamesItsLastSpendAcrossAReopen) {
  testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "site.ledger";
  {
    auto ledger = SiteLedger::Open(path, "site-1");
    ASSERT_TRUE(ledger.ok());
    EXPECT_FALSE((*ledger)->LastSpendIs("fmnist", 1));
    ASSERT_TRUE((*ledger)->Reserve(Spend("fmnist", 1), {8.0, 1e-5}).ok());
    ASSERT_TRUE((*ledger)->Reserve(Spend("fmnist", 2), {8.0, 1e-5}).ok());
    EXPECT_TRUE((*ledger)->LastSpendIs("fmnist", 2));
    EXPECT_FALSE((*ledger)->LastSpendIs("fmnist", 1));
  }
  auto reopened = SiteLedger::Open(path, "site-1");
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE((*reopened)->LastSpendIs("fmnist", 2));
  EXPECT_FALSE((*reopened)->LastSpendIs("other-job", 2));
  EXPECT_EQ((*reopened)->spend_count(), 2);
}

}  // namespace
}  // namespace cohort::client
