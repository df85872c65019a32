// Streaming FedAvg as an AggregationStrategy: updates folded on its own thread as they are
// accepted, the result exact, the weight cap applied, a retried round starting empty, and
// client-level DP weighing by clip factor whatever the site declared. Real spool files.
#include "server/fedavg_strategy.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "core/chunking.h"
#include "server/client_dp_strategy.h"

namespace cohort::server {
namespace {

constexpr size_t kChunkBytes = 4096;
const core::Manifest kManifest({{"w", core::DType::kFloat32, {3000}}});

class StrategyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-strategy-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    config_.federation.max_weight_share = 0.5;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // One site's update, streamed through an UpdateReceiver and spooled as the server does.
  core::SpooledUpdate Spool(const std::string& site, float value, double weight) {
    const std::vector<float> values(kManifest.num_elements(), value);
    const auto bytes = std::as_bytes(std::span(values));
    const uint32_t count = core::ChunkCount(bytes.size(), kChunkBytes);
    auto receiver = core::UpdateReceiver::Open(kManifest, count, kChunkBytes, dir_ / (site + ".update"), {});
    EXPECT_TRUE(receiver.ok());
    for (uint32_t i = 0; i < count; ++i) EXPECT_TRUE(receiver->AddChunk(i, count, core::ChunkOf(bytes, i, kChunkBytes)).ok());
    absl::StatusOr<core::SpooledUpdate> update = receiver->Finish(weight, site);
    EXPECT_TRUE(update.ok()) << update.status();
    return std::move(*update);
  }
  RoundStart Start(uint64_t round, float global_value, size_t selected) {
    auto global = std::make_shared<core::ParameterSet>(kManifest);
    for (float& v : global->floats()) v = global_value;
    return RoundStart{round, 0, global, selected, selected, &config_};
  }

  std::filesystem::path dir_;
  core::JobConfig config_;
};

TEST_F(StrategyTest, TheNextModelIsTheWeightedMeanOfTheAcceptedUpdates) {
  FedAvgStrategy fedavg(kManifest, /*cap_weights=*/true);
  ASSERT_TRUE(fedavg.BeginRound(Start(1, 1.0f, 3)).ok());
  fedavg.Accept(Spool("a", 3.0f, 100));
  fedavg.Accept(Spool("b", -1.0f, 100));
  fedavg.Accept(Spool("c", 1.0f, 200));
  absl::StatusOr<RoundOutcome> outcome = fedavg.CloseRound();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (float v : outcome->next->floats()) ASSERT_FLOAT_EQ(v, 1.0f + (300.0f - 100.0f + 200.0f) / 400.0f);
  EXPECT_EQ(outcome->report["aggregation"]["updates"], 3);
  EXPECT_TRUE(outcome->report["aggregation"]["clamped"].empty());
}

TEST_F(StrategyTest, ASiteClaimingAHugeWeightGetsNoMoreThanItsShare) {
  FedAvgStrategy fedavg(kManifest, /*cap_weights=*/true);
  ASSERT_TRUE(fedavg.BeginRound(Start(1, 4.0f, 4)).ok());
  fedavg.Accept(Spool("attacker", -4.0f, 1e7));  // delta = -global
  for (const char* site : {"a", "b", "c"}) fedavg.Accept(Spool(site, 0.4f, 100));
  absl::StatusOr<RoundOutcome> outcome = fedavg.CloseRound();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  // The attacker's weight is clamped to the other three's total: half of the round.
  for (float v : outcome->next->floats()) ASSERT_FLOAT_EQ(v, 4.0f + 0.5f * -4.0f + 0.5f * 0.4f);
  ASSERT_EQ(outcome->report["aggregation"]["clamped"].size(), 1u);
  EXPECT_EQ(outcome->report["aggregation"]["clamped"][0]["site"], "attacker");
  EXPECT_EQ(outcome->report["aggregation"]["clamped"][0]["weight"], 300.0);
  // Held until its weight was final, the attacker's update went to the fold last: the
  // report gives the order of the fold's sums, for a replay to take them alike.
  EXPECT_EQ(outcome->report["aggregation"]["fold_order"], nlohmann::json({"a", "b", "c", "attacker"}));
}

TEST_F(StrategyTest, ARetriedRoundStartsEmptyAndLeavesNoSpoolFiles) {
  FedAvgStrategy fedavg(kManifest, /*cap_weights=*/true);
  ASSERT_TRUE(fedavg.BeginRound(Start(1, 0.0f, 2)).ok());
  fedavg.Accept(Spool("a", 100.0f, 10));  // held: alone it would own the round
  ASSERT_TRUE(fedavg.BeginRound(Start(1, 0.0f, 2)).ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "a.update"));
  fedavg.Accept(Spool("a", 1.0f, 10));
  fedavg.Accept(Spool("b", 3.0f, 10));
  absl::StatusOr<RoundOutcome> outcome = fedavg.CloseRound();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (float v : outcome->next->floats()) ASSERT_FLOAT_EQ(v, 2.0f);
}

TEST_F(StrategyTest, ARoundWithNoUpdateCannotClose) {
  FedAvgStrategy fedavg(kManifest, /*cap_weights=*/true);
  ASSERT_TRUE(fedavg.BeginRound(Start(1, 0.0f, 2)).ok());
  EXPECT_EQ(fedavg.CloseRound().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(StrategyTest, ClientDpWeighsByClipFactorNotByDeclaredSamplesAndKeepsItsAccountant) {
  config_.privacy.mechanism = "client_dp";
  config_.privacy.target_epsilon = 1e7;
  config_.privacy.noise_multiplier = 1e-3;  // little noise: the weights are what is checked
  config_.privacy.clip_norm = 200;          // above both updates' norms (55 and 164)
  config_.federation.clients_per_round = 2;
  auto dp = ClientDpStrategy::Create(config_, kManifest);
  ASSERT_TRUE(dp.ok()) << dp.status();
  ASSERT_TRUE((*dp)->BeginRound(Start(1, 0.0f, 2)).ok());
  (*dp)->Accept(Spool("a", 1.0f, 1e7));  // a huge declared count changes nothing
  (*dp)->Accept(Spool("b", 3.0f, 1));
  absl::StatusOr<RoundOutcome> outcome = (*dp)->CloseRound();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  // Both under the clip norm: weight 1 each, summed over the fixed denominator 2, so the
  // mean is 2 (by declared samples it would be 1), plus noise of stddev 0.1 per value.
  double mean = 0;
  for (float v : outcome->next->floats()) mean += v;
  mean /= static_cast<double>(outcome->next->floats().size());
  EXPECT_NEAR(mean, 2.0, 0.02);
  ASSERT_TRUE(outcome->report.contains("privacy"));
  const double spent = (*outcome).report["privacy"]["epsilon"].get<double>();

  auto resumed = ClientDpStrategy::Create(config_, kManifest);
  ASSERT_TRUE((*resumed)->RestoreState((*dp)->SaveState(), nullptr).ok());
  EXPECT_EQ((*resumed)->SaveState(), (*dp)->SaveState());
  EXPECT_GT(spent, 0);
}

// The accountant's state in the checkpoint is a few runs of equal rounds, not one entry per
// round: its size does not grow with the job, and a strategy restored from it (or from the
// older per-round form) spends exactly as the one that wrote it.
TEST_F(StrategyTest, ClientDpStateStaysTheSameSizeOverRoundsAndRestoresTheSameSpend) {
  config_.privacy.mechanism = "client_dp";
  config_.privacy.target_epsilon = 1e7;
  config_.privacy.noise_multiplier = 1.0;
  config_.privacy.clip_norm = 200;
  config_.federation.clients_per_round = 2;
  auto dp = ClientDpStrategy::Create(config_, kManifest);
  ASSERT_TRUE(dp.ok()) << dp.status();
  nlohmann::json per_round = nlohmann::json::array();  // what older checkpoints carried
  size_t size_at_round_2 = 0;
  for (uint64_t round = 1; round <= 30; ++round) {
    ASSERT_TRUE((*dp)->BeginRound(Start(round, 0.0f, 2)).ok());
    (*dp)->Accept(Spool("a", 1.0f, 10));
    (*dp)->Accept(Spool("b", 3.0f, 10));
    absl::StatusOr<RoundOutcome> outcome = (*dp)->CloseRound();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    per_round.push_back({{"round", round}, {"privacy", outcome->report["privacy"]}});
    if (round == 2) size_at_round_2 = (*dp)->SaveState().dump().size();
  }
  const nlohmann::json state = (*dp)->SaveState();
  EXPECT_LE(state.dump().size(), size_at_round_2 + 2) << state.dump();  // "rounds": 2 -> 30
  ASSERT_EQ(state["steps"].size(), 1u) << state.dump();
  EXPECT_EQ(state["steps"][0]["rounds"], 30);

  auto from_state = ClientDpStrategy::Create(config_, kManifest);
  auto from_old_form = ClientDpStrategy::Create(config_, kManifest);
  ASSERT_TRUE((*from_state)->RestoreState(state, nullptr).ok());
  ASSERT_TRUE((*from_old_form)->RestoreState({{"rounds", per_round}}, nullptr).ok());
  EXPECT_EQ((*from_old_form)->SaveState(), state);
  std::vector<double> next_epsilon;
  for (auto* strategy : {dp->get(), from_state->get(), from_old_form->get()}) {
    ASSERT_TRUE(strategy->BeginRound(Start(31, 0.0f, 2)).ok());
    strategy->Accept(Spool("a", 1.0f, 10));
    absl::StatusOr<RoundOutcome> outcome = strategy->CloseRound();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    next_epsilon.push_back(outcome->report["privacy"]["epsilon"].get<double>());
  }
  EXPECT_NEAR(next_epsilon[1], next_epsilon[0], 1e-9 * next_epsilon[0]);
  EXPECT_NEAR(next_epsilon[2], next_epsilon[0], 1e-9 * next_epsilon[0]);
}

}  // namespace
}  // namespace cohort::server
