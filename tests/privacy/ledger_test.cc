#include "privacy/ledger.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "storage/sha256.h"

namespace cohort::privacy {
namespace {

namespace fs = std::filesystem;

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (fs::temp_directory_path() / "cohort-ledger-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = (fs::path(dir_) / "site-a.ledger").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Ledger> OpenOrDie(const PrivacyBudget& budget = kBudget) {
    auto ledger = Ledger::Open(path_, "site-a", budget);
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    return ledger.ok() ? std::move(*ledger) : nullptr;
  }

  std::string ReadFile() const {
    std::ifstream in(path_, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  void WriteFile(const std::string& content) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << content;
  }
  std::vector<std::string> Lines() const {
    std::vector<std::string> lines;
    std::istringstream in(ReadFile());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }
  void WriteLines(const std::vector<std::string>& lines) const {
    std::string content;
    for (const std::string& line : lines) content += line + "\n";
    WriteFile(content);
  }

  // A ledger with `count` spends, closed again.
  void MakeLedgerWithSpends(int count) {
    auto ledger = OpenOrDie();
    for (int i = 0; i < count; ++i) {
      SpendRequest request = Spend();
      request.round = i;
      ASSERT_TRUE(ledger->RecordSpend(request).ok());
    }
  }

  static SpendRequest Spend(int64_t steps = 100, double q = 0.01,
                            double sigma = 1.0) {
    SpendRequest request;
    request.job = "mnist-dp";
    request.round = 0;
    request.mechanism = Mechanism::kDpSgd;
    request.sampling_rate = q;
    request.noise_multiplier = sigma;
    request.steps = steps;
    request.clip_norm = 1.0;
    return request;
  }

  static void ExpectDataLoss(const absl::StatusOr<std::unique_ptr<Ledger>>& open,
                             const std::string& fragment) {
    ASSERT_FALSE(open.ok());
    EXPECT_EQ(open.status().code(), absl::StatusCode::kDataLoss) << open.status();
    EXPECT_NE(std::string(open.status().message()).find(fragment),
              std::string::npos)
        << "message: " << open.status().message() << "\nexpected: " << fragment;
  }

  static constexpr PrivacyBudget kBudget{8.0, 1e-5};
  std::string dir_;
  std::string path_;
};

TEST_F(LedgerTest, CreatesAFileWithAHeaderForTheSiteAndBudget) {
  auto ledger = OpenOrDie();
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(ledger->spent_epsilon(), 0.0);
  EXPECT_EQ(ledger->remaining_epsilon(), 8.0);
  EXPECT_EQ(ledger->spend_count(), 0);

  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  const auto header = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(header["kind"], "header");
  EXPECT_EQ(header["version"], 1);
  EXPECT_EQ(header["site"], "site-a");
  EXPECT_EQ(header["budget"]["epsilon"], 8.0);
  EXPECT_EQ(header["budget"]["delta"], 1e-5);
  EXPECT_EQ(header["prev"], std::string(64, '0'));
  EXPECT_EQ(ledger->head_hash(), storage::Sha256Hex(lines[0]));
}

TEST_F(LedgerTest, RecordsEachSpendAsOneHashChainedLine) {
  auto ledger = OpenOrDie();
  SpendRequest request = Spend(250, 0.02, 1.3);
  request.mechanism = Mechanism::kClientDp;
  request.round = 7;
  auto check = ledger->RecordSpend(request);
  ASSERT_TRUE(check.ok()) << check.status();
  const double expected = ComputeEpsilon(0.02, 1.3, 250, 1e-5)->epsilon;
  EXPECT_DOUBLE_EQ(check->epsilon_after, expected);
  EXPECT_TRUE(check->fits);
  EXPECT_DOUBLE_EQ(ledger->spent_epsilon(), expected);
  EXPECT_DOUBLE_EQ(ledger->remaining_epsilon(), 8.0 - expected);

  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  const auto spend = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(spend["kind"], "spend");
  EXPECT_EQ(spend["seq"], 1);
  EXPECT_EQ(spend["job"], "mnist-dp");
  EXPECT_EQ(spend["round"], 7);
  EXPECT_EQ(spend["mechanism"], "client-dp");
  EXPECT_EQ(spend["parameters"]["q"], 0.02);
  EXPECT_EQ(spend["parameters"]["sigma"], 1.3);
  EXPECT_EQ(spend["parameters"]["steps"], 250);
  EXPECT_EQ(spend["parameters"]["clip"], 1.0);
  EXPECT_EQ(spend["epsilon_after"].get<double>(), expected);
  EXPECT_EQ(spend["delta"], 1e-5);
  EXPECT_TRUE(spend.contains("time"));
  EXPECT_EQ(spend["prev"], storage::Sha256Hex(lines[0]));
  EXPECT_EQ(ledger->head_hash(), storage::Sha256Hex(lines[1]));
}

TEST_F(LedgerTest, CanSpendReportsTheResultingEpsilonAndChangesNothing) {
  auto ledger = OpenOrDie();
  const std::string before = ReadFile();
  auto check = ledger->CanSpend(Spend(1000));
  ASSERT_TRUE(check.ok());
  EXPECT_DOUBLE_EQ(check->epsilon_after,
                   ComputeEpsilon(0.01, 1.0, 1000, 1e-5)->epsilon);
  EXPECT_TRUE(check->fits);
  EXPECT_FALSE(ledger->CanSpend(Spend(1000000))->fits);
  EXPECT_EQ(ReadFile(), before);
  EXPECT_EQ(ledger->spent_epsilon(), 0.0);
}

TEST_F(LedgerTest, RefusesAnOverspendAndChangesNothing) {
  auto ledger = OpenOrDie();
  ASSERT_TRUE(ledger->RecordSpend(Spend(1000)).ok());
  const std::string before = ReadFile();
  const double spent = ledger->spent_epsilon();

  auto refused = ledger->RecordSpend(Spend(200000));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(refused.status().message()).find("over the budget of 8"),
            std::string::npos)
      << refused.status();
  EXPECT_EQ(ReadFile(), before);
  EXPECT_EQ(ledger->spent_epsilon(), spent);
  EXPECT_EQ(ledger->spend_count(), 1);
  // A spend that fits is still accepted afterwards.
  EXPECT_TRUE(ledger->RecordSpend(Spend(100)).ok());
}

TEST_F(LedgerTest, RestartingKeepsTheSpentBudget) {
  double after_first = 0;
  {
    auto ledger = OpenOrDie();
    after_first = ledger->RecordSpend(Spend(1000))->epsilon_after;
  }
  double after_second = 0;
  {
    auto ledger = OpenOrDie();
    EXPECT_DOUBLE_EQ(ledger->spent_epsilon(), after_first);
    EXPECT_EQ(ledger->spend_count(), 1);
    SpendRequest second = Spend(300, 0.05, 2.0);
    second.job = "another-job";
    after_second = ledger->RecordSpend(second)->epsilon_after;
  }
  auto ledger = OpenOrDie();
  EXPECT_DOUBLE_EQ(ledger->spent_epsilon(), after_second);
  EXPECT_EQ(ledger->spend_count(), 2);

  // The two jobs compose in RDP, not by adding epsilons.
  RdpAccountant both;
  ASSERT_TRUE(both.AddSteps(0.01, 1.0, 1000).ok());
  ASSERT_TRUE(both.AddSteps(0.05, 2.0, 300).ok());
  EXPECT_DOUBLE_EQ(after_second, both.GetEpsilon(1e-5)->epsilon);
  EXPECT_LT(after_second,
            after_first + ComputeEpsilon(0.05, 2.0, 300, 1e-5)->epsilon);
}

TEST_F(LedgerTest, RefusesALedgerOfAnotherSiteOrBudget) {
  { auto ledger = OpenOrDie(); }
  auto other_site = Ledger::Open(path_, "site-b", kBudget);
  ASSERT_FALSE(other_site.ok());
  EXPECT_EQ(other_site.status().code(), absl::StatusCode::kFailedPrecondition);
  auto other_budget = Ledger::Open(path_, "site-a", {16.0, 1e-5});
  ASSERT_FALSE(other_budget.ok());
  EXPECT_EQ(other_budget.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(other_budget.status().message()).find("epsilon=16"),
            std::string::npos);
}

TEST_F(LedgerTest, RefusesASecondOpenWhileTheFirstIsLive) {
  auto first = OpenOrDie();
  auto second = Ledger::Open(path_, "site-a", kBudget);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  first.reset();
  EXPECT_TRUE(Ledger::Open(path_, "site-a", kBudget).ok());
}

TEST_F(LedgerTest, DetectsAnEditedLine) {
  MakeLedgerWithSpends(3);
  const std::vector<std::string> original = Lines();
  // An edit that leaves epsilon consistent (the round of the first spend)
  // is caught by the next line's hash.
  std::vector<std::string> lines = original;
  size_t at = lines[1].find("\"round\":0");
  ASSERT_NE(at, std::string::npos);
  lines[1].replace(at, 9, "\"round\":5");
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 3: hash chain broken");
  // An edit of the parameters is caught on the line itself by the replay.
  lines = original;
  at = lines[1].find("\"steps\":100");
  ASSERT_NE(at, std::string::npos);
  lines[1].replace(at, 11, "\"steps\":10");
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 2: epsilon_after is");
}

TEST_F(LedgerTest, DetectsAnEditedLastLineByReplayingEpsilon) {
  MakeLedgerWithSpends(2);
  std::vector<std::string> lines = Lines();
  const size_t at = lines[2].find("\"steps\":100");
  ASSERT_NE(at, std::string::npos);
  lines[2].replace(at, 11, "\"steps\":10");
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 3: epsilon_after is");
}

TEST_F(LedgerTest, DetectsADeletedLine) {
  MakeLedgerWithSpends(3);
  std::vector<std::string> lines = Lines();
  lines.erase(lines.begin() + 2);
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 3: hash chain broken");
}

TEST_F(LedgerTest, DetectsADeletedHeader) {
  MakeLedgerWithSpends(1);
  std::vector<std::string> lines = Lines();
  lines.erase(lines.begin());
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 1: expected kind \"header\", found \"spend\"");
}

TEST_F(LedgerTest, DetectsReorderedLines) {
  MakeLedgerWithSpends(3);
  std::vector<std::string> lines = Lines();
  std::swap(lines[1], lines[2]);
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 2: hash chain broken");
}

TEST_F(LedgerTest, DetectsCorruptJson) {
  MakeLedgerWithSpends(2);
  std::vector<std::string> lines = Lines();
  lines[1] = lines[1].substr(0, lines[1].size() / 2);
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget),
                 "line 2: not a JSON object");
}

TEST_F(LedgerTest, DetectsADeeplyNestedLineWithoutCrashing) {
  MakeLedgerWithSpends(2);
  for (int depth : {1'000, 100'000}) {
    std::vector<std::string> lines = Lines();
    lines[1] = std::string(depth, '[') + std::string(depth, ']');
    WriteLines(lines);
    const absl::StatusOr<std::unique_ptr<Ledger>> open = Ledger::Open(path_, "site-a", kBudget);
    ExpectDataLoss(open, "line 2");
    EXPECT_LT(open.status().message().size(), 300 + path_.size()) << open.status().message().substr(0, 500);
    if (depth == 1'000) ExpectDataLoss(open, "line 2: entry: expected JSON nested at most 64 levels deep");
  }
}

TEST_F(LedgerTest, DetectsAnInsertedEmptyLine) {
  MakeLedgerWithSpends(1);
  std::vector<std::string> lines = Lines();
  lines.insert(lines.begin() + 1, "");
  WriteLines(lines);
  ExpectDataLoss(Ledger::Open(path_, "site-a", kBudget), "line 2: empty line");
}

TEST_F(LedgerTest, DropsATornTrailingLineAndReportsIt) {
  MakeLedgerWithSpends(2);
  const std::string complete = ReadFile();
  // A crash in the middle of the third append.
  const std::string torn = "{\"kind\":\"spend\",\"seq\":3,\"ti";
  WriteFile(complete + torn);
  double spent = 0;
  {
    auto ledger = OpenOrDie();
    ASSERT_NE(ledger, nullptr);
    EXPECT_EQ(ledger->dropped_partial_bytes(), static_cast<int64_t>(torn.size()));
    EXPECT_EQ(ledger->spend_count(), 2);
    EXPECT_EQ(ReadFile(), complete);
    spent = ledger->RecordSpend(Spend())->epsilon_after;
  }
  auto ledger = OpenOrDie();
  EXPECT_EQ(ledger->dropped_partial_bytes(), 0);
  EXPECT_EQ(ledger->spend_count(), 3);
  EXPECT_DOUBLE_EQ(ledger->spent_epsilon(), spent);
}

TEST_F(LedgerTest, StartsAfreshAfterACrashTearsTheHeader) {
  const std::string torn = "{\"kind\":\"header\",\"vers";
  WriteFile(torn);
  auto ledger = OpenOrDie();
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(ledger->dropped_partial_bytes(), static_cast<int64_t>(torn.size()));
  EXPECT_EQ(ledger->spend_count(), 0);
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["kind"], "header");
}

TEST_F(LedgerTest, ReportsAMissingDirectory) {
  auto open = Ledger::Open(dir_ + "/no/such/dir/site.ledger", "site-a", kBudget);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), absl::StatusCode::kNotFound) << open.status();
}

TEST_F(LedgerTest, RejectsInvalidSpendRequestsNamingTheField) {
  auto ledger = OpenOrDie();
  SpendRequest no_job = Spend();
  no_job.job = "";
  EXPECT_EQ(std::string(ledger->RecordSpend(no_job).status().message()),
            "job: expected non-empty text, got \"\"");
  EXPECT_EQ(std::string(ledger->CanSpend(Spend(0)).status().message()),
            "steps: expected an integer >= 1, got 0");
  SpendRequest no_clip = Spend();
  no_clip.clip_norm = 0;
  EXPECT_EQ(std::string(ledger->RecordSpend(no_clip).status().message()),
            "clip_norm: expected a number > 0, got 0");
  EXPECT_EQ(ledger->spend_count(), 0);
  EXPECT_EQ(Lines().size(), 1u);
}

TEST_F(LedgerTest, RejectsAnInvalidBudgetOrSite) {
  auto bad_budget = Ledger::Open(path_, "site-a", {-1, 1e-5});
  ASSERT_FALSE(bad_budget.ok());
  EXPECT_EQ(std::string(bad_budget.status().message()),
            "privacy.target_epsilon: expected a number > 0, got -1");
  auto bad_site = Ledger::Open(path_, "", kBudget);
  ASSERT_FALSE(bad_site.ok());
  EXPECT_EQ(bad_site.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path_));
}

TEST_F(LedgerTest, SurvivesJobNamesThatNeedEscaping) {
  {
    auto ledger = OpenOrDie();
    SpendRequest request = Spend();
    request.job = "job \"quoted\"\nwith newline";
    ASSERT_TRUE(ledger->RecordSpend(request).ok());
  }
  EXPECT_EQ(Lines().size(), 2u);
  auto ledger = OpenOrDie();
  EXPECT_EQ(ledger->spend_count(), 1);
}

}  // namespace
}  // namespace cohort::privacy
