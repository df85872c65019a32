// The site's ledger as the agent uses it: spends recorded before training, refused once the
// budget is spent, never reset by a restart, and a tampered file stops the site.
#include <gtest/gtest.h>

#include <fstream>

#include "client/site_ledger.h"

namespace cohort::client {
namespace {

std::filesystem::path TempDir() {
  char dir_template[] = "/tmp/cohort-site-ledger-test-XXXXXX";
  return ::mkdtemp(dir_template);
}

privacy::SpendRequest Round(int64_t round) {
  privacy::SpendRequest request;
  request.job = "fmnist";
  request.round = round;
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = 256.0 / 60000;
  request.noise_multiplier = 1.1;
  request.steps = 235;  // one epoch
  request.clip_norm = 1.0;
  return request;
}

const privacy::PrivacyBudget kBudget{3.0, 1e-5};

TEST(SiteLedger, SpendsAccumulateUntilTheBudgetRefusesTheNextRound) {
  const std::filesystem::path dir = TempDir();
  auto ledger = SiteLedger::Open(dir / "site.ledger", "hospital-a");
  ASSERT_TRUE(ledger.ok()) << ledger.status().message();
  double last = 0;
  int64_t round = 1;
  for (;; ++round) {
    absl::StatusOr<privacy::SpendCheck> spent = (*ledger)->Reserve(Round(round), kBudget);
    if (!spent.ok()) {
      EXPECT_EQ(spent.status().code(), absl::StatusCode::kResourceExhausted) << spent.status().message();
      break;
    }
    EXPECT_GT(spent->epsilon_after, last);
    last = spent->epsilon_after;
    ASSERT_LT(round, 200);
  }
  EXPECT_GT(round, 2);
  EXPECT_LE(last, 3.0);
  EXPECT_DOUBLE_EQ((*ledger)->spent_epsilon(), last);
  std::filesystem::remove_all(dir);
}

TEST(SiteLedger, ARestartedSiteKeepsWhatItSpent) {
  const std::filesystem::path dir = TempDir();
  double spent = 0;
  {
    auto ledger = SiteLedger::Open(dir / "site.ledger", "hospital-a");
    ASSERT_TRUE(ledger.ok());
    ASSERT_TRUE((*ledger)->Reserve(Round(1), kBudget).ok());
    spent = (*ledger)->Reserve(Round(2), kBudget)->epsilon_after;
  }
  auto reopened = SiteLedger::Open(dir / "site.ledger", "hospital-a");
  ASSERT_TRUE(reopened.ok()) << reopened.status().message();
  EXPECT_DOUBLE_EQ((*reopened)->spent_epsilon(), spent);
  std::filesystem::remove_all(dir);
}

TEST(SiteLedger, AnEditedLedgerStopsTheSiteAndSaysWhere) {
  const std::filesystem::path dir = TempDir();
  {
    auto ledger = SiteLedger::Open(dir / "site.ledger", "hospital-a");
    ASSERT_TRUE((*ledger)->Reserve(Round(1), kBudget).ok());
    ASSERT_TRUE((*ledger)->Reserve(Round(2), kBudget).ok());
  }
  std::ifstream in(dir / "site.ledger");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = text.find("\"steps\":235");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, 11, "\"steps\":100");  // someone makes a spend look smaller
  std::ofstream(dir / "site.ledger", std::ios::trunc) << text;
  auto reopened = SiteLedger::Open(dir / "site.ledger", "hospital-a");
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kDataLoss) << reopened.status().message();
  EXPECT_NE(reopened.status().message().find("will not train"), std::string::npos) << reopened.status().message();
  std::filesystem::remove_all(dir);
}

TEST(SiteLedger, AJobWithAnotherBudgetIsRefused) {
  const std::filesystem::path dir = TempDir();
  auto ledger = SiteLedger::Open(dir / "site.ledger", "hospital-a");
  ASSERT_TRUE((*ledger)->Reserve(Round(1), kBudget).ok());
  const absl::StatusOr<privacy::SpendCheck> other = (*ledger)->Reserve(Round(2), {8.0, 1e-5});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("epsilon 8"), std::string::npos) << other.status().message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace cohort::client
