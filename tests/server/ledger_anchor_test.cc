// Ledgers anchored: a site that loses spends from its privacy ledger (file deleted, cut
// back to its header, an older copy restored, the header's budget rewritten with every hash
// recomputed) is refused at Join by a real server over loopback gRPC, naming the site and
// both positions; an honest ledger that moved forward is accepted and re-anchored.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "privacy/ledger.h"
#include "server/ledger_anchors.h"
#include "storage/sha256.h"
#include "tests/server/served_job.h"

namespace cohort::server {
namespace {

privacy::SpendRequest Spend(int64_t round) {
  privacy::SpendRequest request;
  request.job = "anchored-job";
  request.round = round;
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = 0.01;
  request.noise_multiplier = 1.1;
  request.steps = 100;
  request.clip_norm = 1.0;
  return request;
}

// A real ledger with `spends` spends under budget `epsilon`.
void WriteLedger(const std::filesystem::path& path, int spends, double epsilon = 8.0) {
  auto ledger = privacy::Ledger::Open(path.string(), "hospital-a", {epsilon, 1e-5});
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  for (int i = 1; i <= spends; ++i) ASSERT_TRUE((*ledger)->RecordSpend(Spend(i)).ok());
}

LedgerPosition PositionOf(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) return {};
  std::ifstream in(path);
  std::string header;
  std::getline(in, header);
  auto budget = privacy::ledger_format::ParseHeader(header);
  EXPECT_TRUE(budget.ok()) << budget.status();
  auto ledger = privacy::Ledger::Open(path.string(), "hospital-a", budget->budget);
  EXPECT_TRUE(ledger.ok()) << ledger.status();
  return {true, (*ledger)->header_hash(), static_cast<uint64_t>((*ledger)->spend_count()), (*ledger)->head_hash(),
          (*ledger)->spent_epsilon()};
}

v1::LedgerPosition ToProto(const LedgerPosition& p) {
  v1::LedgerPosition out;
  out.set_present(p.present);
  out.set_header_sha256(p.header_sha256);
  out.set_spends(p.spends);
  out.set_head_sha256(p.head_sha256);
  out.set_epsilon_spent(p.epsilon_spent);
  return out;
}

class LedgerAnchorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/cohort-ledger-anchor-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    ledger_ = dir_ / "site" / "privacy-ledger.jsonl";
    std::filesystem::create_directories(ledger_.parent_path());
  }
  void TearDown() override {
    if (job_) job_->Cancel();
    if (serving_.valid()) serving_.wait();
    job_.reset();
    anchors_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A server with ledger anchors in dir_/state, serving a fresh job on loopback.
  void Serve() {
    auto anchors = LedgerAnchors::Open(dir_ / "state");
    ASSERT_TRUE(anchors.ok()) << anchors.status();
    anchors_ = std::move(*anchors);
    JobOptions options;
    options.config = testing::SmallJob(/*rounds=*/1, /*per_round=*/1, /*min_clients=*/1, 30);
    options.config.name = "anchored-job";
    options.initial_model = core::ParameterSet(testing::SmallManifest());
    options.out_dir = dir_ / "out";
    options.ledger_anchors = anchors_.get();
    auto job = FederatedJob::Create(std::move(options));
    ASSERT_TRUE(job.ok()) << job.status();
    job_ = std::move(*job);
    const int port = testing::ServeOnLoopback(*job_, nullptr, 0.2, &serving_);
    client_ = std::make_unique<wire::FederationClient>(wire::Connection{"127.0.0.1:" + std::to_string(port)});
  }
  absl::Status JoinWith(const LedgerPosition& position) {
    wire::JoinOptions options;
    options.ledger = ToProto(position);
    return client_->Join("hospital-a", 100, options).status();
  }

  std::filesystem::path dir_, ledger_;
  std::unique_ptr<LedgerAnchors> anchors_;
  std::unique_ptr<FederatedJob> job_;
  std::future<absl::Status> serving_;
  std::unique_ptr<wire::FederationClient> client_;
};

TEST(CheckLedgerAgainstAnchor, AcceptsAnySiteNeverSeenAndALedgerThatMovedForward) {
  const LedgerPosition anchor{true, std::string(64, 'a'), 3, std::string(64, 'b'), 1.5};
  EXPECT_TRUE(CheckLedgerAgainstAnchor("s", {}, std::nullopt).ok());
  EXPECT_TRUE(CheckLedgerAgainstAnchor("s", anchor, std::nullopt).ok());
  EXPECT_TRUE(CheckLedgerAgainstAnchor("s", anchor, anchor).ok());
  EXPECT_TRUE(CheckLedgerAgainstAnchor("s", {true, std::string(64, 'a'), 4, std::string(64, 'c'), 1.9}, anchor).ok());
}

TEST(CheckLedgerAgainstAnchor, RefusesEachWayOfLosingSpends) {
  const LedgerPosition anchor{true, std::string(64, 'a'), 3, std::string(64, 'b'), 1.5};
  const LedgerPosition missing{};
  const LedgerPosition behind{true, std::string(64, 'a'), 2, std::string(64, 'c'), 1.2};
  const LedgerPosition rewritten_tail{true, std::string(64, 'a'), 3, std::string(64, 'd'), 1.5};
  const LedgerPosition new_header{true, std::string(64, 'e'), 3, std::string(64, 'b'), 1.5};
  const LedgerPosition less_epsilon{true, std::string(64, 'a'), 4, std::string(64, 'f'), 0.5};
  for (const LedgerPosition& p : {missing, behind, rewritten_tail, new_header, less_epsilon}) {
    const absl::Status s = CheckLedgerAgainstAnchor("hospital-a", p, anchor);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("hospital-a"), std::string_view::npos) << s;
  }
}

TEST_F(LedgerAnchorTest, AnchorsSurviveAReopenAndNeverMoveBack) {
  WriteLedger(ledger_, 2);
  const LedgerPosition two = PositionOf(ledger_);
  {
    auto anchors = LedgerAnchors::Open(dir_ / "state");
    ASSERT_TRUE(anchors.ok()) << anchors.status();
    ASSERT_TRUE((*anchors)->Advance("hospital-a", two).ok());
    LedgerPosition older = two;
    older.spends = 1;
    ASSERT_TRUE((*anchors)->Advance("hospital-a", older).ok());  // ignored
  }
  auto reopened = LedgerAnchors::Open(dir_ / "state");
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  std::optional<LedgerPosition> found = (*reopened)->Find("hospital-a");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->spends, 2u);
  EXPECT_EQ(found->head_sha256, two.head_sha256);
  EXPECT_EQ(found->header_sha256, two.header_sha256);
  EXPECT_EQ(std::filesystem::status(dir_ / "state" / LedgerAnchors::kFileName).permissions() &
                std::filesystem::perms::group_all,
            std::filesystem::perms::none);
}

TEST_F(LedgerAnchorTest, ADeletedLedgerIsRefusedAtJoinWithHowToRestoreIt) {
  WriteLedger(ledger_, 3);
  Serve();
  ASSERT_TRUE(anchors_->Advance("hospital-a", PositionOf(ledger_)).ok());  // a past job's rounds
  std::filesystem::remove(ledger_);
  const absl::Status s = JoinWith(PositionOf(ledger_));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("hospital-a has no privacy ledger"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("3 spends"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("backup"), std::string_view::npos) << s;
}

TEST_F(LedgerAnchorTest, ALedgerCutBackToItsHeaderOrAnOlderCopyIsRefused) {
  WriteLedger(ledger_, 1);
  std::filesystem::copy_file(ledger_, dir_ / "older-copy.jsonl");
  {
    auto ledger = privacy::Ledger::Open(ledger_.string(), "hospital-a", {8.0, 1e-5});
    ASSERT_TRUE(ledger.ok());
    ASSERT_TRUE((*ledger)->RecordSpend(Spend(2)).ok());
  }
  Serve();
  ASSERT_TRUE(JoinWith(PositionOf(ledger_)).ok());           // the anchor is set at Join
  ASSERT_TRUE(anchors_->Advance("hospital-a", PositionOf(ledger_)).ok());
  // Cut back to its header line: a valid chain, no spends.
  std::string header;
  {
    std::ifstream in(ledger_);
    std::getline(in, header);
  }
  std::ofstream(ledger_, std::ios::trunc) << header << "\n";
  absl::Status s = JoinWith(PositionOf(ledger_));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("behind"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("0 spends"), std::string_view::npos) << s;
  EXPECT_NE(s.message().find("2 spends"), std::string_view::npos) << s;
  // An older copy of the file: a valid chain one spend short.
  std::filesystem::copy_file(dir_ / "older-copy.jsonl", ledger_, std::filesystem::copy_options::overwrite_existing);
  s = JoinWith(PositionOf(ledger_));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("1 spends"), std::string_view::npos) << s;
}

TEST_F(LedgerAnchorTest, AHeaderRewrittenWithAHigherBudgetAndRecomputedHashesIsRefused) {
  WriteLedger(ledger_, 2, /*epsilon=*/4.0);
  Serve();
  ASSERT_TRUE(JoinWith(PositionOf(ledger_)).ok());
  // The forger's ledger: the same spends under a budget of 100, every hash recomputed (a
  // fresh, valid ledger file).
  std::filesystem::remove(ledger_);
  WriteLedger(ledger_, 2, /*epsilon=*/100.0);
  const absl::Status s = JoinWith(PositionOf(ledger_));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("different header"), std::string_view::npos) << s;
}

TEST_F(LedgerAnchorTest, AnHonestLedgerThatMovedOnIsAcceptedAndReanchored) {
  WriteLedger(ledger_, 1);
  Serve();
  ASSERT_TRUE(JoinWith(PositionOf(ledger_)).ok());
  {
    auto ledger = privacy::Ledger::Open(ledger_.string(), "hospital-a", {8.0, 1e-5});
    ASSERT_TRUE(ledger.ok());
    ASSERT_TRUE((*ledger)->RecordSpend(Spend(2)).ok());
  }
  const LedgerPosition now = PositionOf(ledger_);
  ASSERT_TRUE(JoinWith(now).ok());
  ASSERT_TRUE(anchors_->Find("hospital-a").has_value());
  EXPECT_EQ(anchors_->Find("hospital-a")->spends, 2u);
  EXPECT_EQ(anchors_->Find("hospital-a")->head_sha256, now.head_sha256);
}

}  // namespace
}  // namespace cohort::server
