#include "server/job_observation.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "tests/observe/prometheus_parser.h"
#include "tests/server/served_job.h"
#include "tests/temp_dir.h"

namespace cohort::server {
namespace {

std::string Entry(int seq, size_t pad = 0) {
  return nlohmann::json({{"seq", seq}, {"action", "participant.join"}, {"pad", std::string(pad, 'x')}}).dump();
}

TEST(ReadAuditTailTest, TheLastEntriesOldestFirstWithoutAPartialLine) {
  cohort::testing::TempDir dir;
  const std::filesystem::path log = dir.path() / "audit.log";
  {
    std::ofstream out(log);
    for (int i = 1; i <= 60; ++i) out << Entry(i) << "\n";
    out << "{\"seq\": 61, \"act";  // an append in progress
  }
  const nlohmann::json tail = ReadAuditTail(log, 50);
  ASSERT_EQ(tail.size(), 50u);
  EXPECT_EQ(tail.front()["seq"], 11);
  EXPECT_EQ(tail.back()["seq"], 60);
  EXPECT_EQ(ReadAuditTail(log, 3).front()["seq"], 58);
}

TEST(ReadAuditTailTest, ReadsOnlyTheEndOfALargeLog) {
  cohort::testing::TempDir dir;
  const std::filesystem::path log = dir.path() / "audit.log";
  {
    std::ofstream out(log);
    for (int i = 1; i <= 100; ++i) out << Entry(i, 10000) << "\n";  // ~1 MB
  }
  const nlohmann::json tail = ReadAuditTail(log, 50);
  // 256 KiB hold about 26 of these entries, the first of them cut: whole ones only.
  ASSERT_FALSE(tail.empty());
  EXPECT_LT(tail.size(), 50u);
  EXPECT_EQ(tail.back()["seq"], 100);
  for (size_t i = 1; i < tail.size(); ++i) EXPECT_EQ(tail[i]["seq"].get<int>(), tail[i - 1]["seq"].get<int>() + 1);
}

TEST(ReadAuditTailTest, NoLogIsAnEmptyTail) {
  cohort::testing::TempDir dir;
  EXPECT_EQ(ReadAuditTail(dir.path() / "missing.log", 50), nlohmann::json::array());
  std::ofstream(dir.path() / "empty.log").flush();
  EXPECT_EQ(ReadAuditTail(dir.path() / "empty.log", 50), nlohmann::json::array());
}

TEST(DashboardStateTest, FollowsTheDocumentedContract) {
  JobSnapshot s;
  s.job = "mnist";
  s.state = JobState::kHeld;
  s.rounds_total = 5;
  s.elapsed_seconds = 12.5;
  s.phase = RoundProgress::Phase::kTraining;
  s.round = 2;
  s.attempt = 1;
  s.round_sites = {{"a", "uploading"}, {"b", "downloading"}};
  s.sites = {{"a", "live", 0.25}, {"b", "dropped", 40.0}, {"c", "revoked", std::nullopt}};
  s.epsilon_budget = 8;
  const nlohmann::json rounds = nlohmann::json::array({{{"round", 1}, {"test_accuracy", 0.5}}});
  const nlohmann::json state = nlohmann::json::parse(DashboardState(
      s, {std::make_shared<const std::string>(rounds[0].dump())}, {{"a", 1.5}}, nlohmann::json::array({{{"seq", 1}}})));
  EXPECT_EQ(state["job"], nlohmann::json({{"name", "mnist"},
                                          {"job_type", "horizontal"},
                                          {"status", "waiting"},
                                          {"rounds_total", 5},
                                          {"elapsed_seconds", 12.5}}));
  EXPECT_EQ(state["round"]["number"], 2);
  EXPECT_EQ(state["round"]["attempt"], 1);
  EXPECT_EQ(state["round"]["phase"], "training");
  EXPECT_EQ(state["round"]["sites"][0], nlohmann::json({{"site", "a"}, {"phase", "uploading"}}));
  EXPECT_EQ(state["summary_rounds"], rounds);
  ASSERT_EQ(state["sites"].size(), 3u);
  EXPECT_EQ(state["sites"][0], nlohmann::json({{"site", "a"},
                                               {"status", "live"},
                                               {"last_contact_seconds_ago", 0.25},
                                               {"epsilon_spent", 1.5},
                                               {"epsilon_budget", 8.0}}));
  EXPECT_TRUE(state["sites"][1]["epsilon_spent"].is_null());
  EXPECT_TRUE(state["sites"][2]["last_contact_seconds_ago"].is_null());
  EXPECT_EQ(state["audit_tail"].size(), 1u);
}

using testing::ServedJob;
using testing::SmallJob;
using v1::TaskHeader;

// The phase of `site` in the dashboard's view of the current round ("" when not listed).
std::string SitePhase(FederatedJob& job, const std::string& site) {
  for (const JobSnapshot::RoundSite& r : job.Observe().round_sites) {
    if (r.site == site) return r.phase;
  }
  return "";
}

TEST(JobObservationTest, TheMetricsAndTheDashboardFollowARealServedJob) {
  ServedJob served(SmallJob(/*rounds=*/2, /*per_round=*/2, /*min_clients=*/2, /*heartbeat_timeout_s=*/30));
  const size_t floats = testing::kSmallFloats;
  served.Join("a", 10);
  served.Join("b", 10);
  for (uint64_t round = 1; round <= 2; ++round) {
    testing::Pulled a = served.Pull("a"), b = served.Pull("b");
    ASSERT_EQ(a.header.kind(), TaskHeader::TRAIN);
    ASSERT_EQ(b.header.kind(), TaskHeader::TRAIN);
    // Downloaded: the site trains now (noted when the server's last write completes).
    for (int i = 0; i < 100 && SitePhase(served.job(), "a") != "training"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(SitePhase(served.job(), "a"), "training");
    EXPECT_EQ(served.job().Observe().phase, RoundProgress::Phase::kTraining);
    EXPECT_TRUE(served.Push("a", round, a.header.model_version(), std::vector<float>(floats, 1.0f), 10).ok());
    EXPECT_EQ(SitePhase(served.job(), "a"), "reported");
    if (round == 1) {
      // A second report is refused and counted by its reason.
      const grpc::Status again = served.Push("a", 1, a.header.model_version(), std::vector<float>(floats, 1.0f), 10);
      EXPECT_EQ(again.error_code(), grpc::StatusCode::ALREADY_EXISTS) << again.error_message();
    }
    EXPECT_TRUE(served.Push("b", round, b.header.model_version(), std::vector<float>(floats, 3.0f), 10).ok());
  }
  ASSERT_TRUE(served.Wait().ok());

  const nlohmann::json summary = nlohmann::json::parse(served.job().Status().summary_json);
  ASSERT_EQ(summary["rounds"].size(), 2u);
  double previous_elapsed = 0;
  for (const nlohmann::json& r : summary["rounds"]) {
    ASSERT_TRUE(r.contains("phase_seconds")) << r.dump();
    for (const char* phase : {"waiting", "training", "upload", "fold", "checkpoint"}) {
      ASSERT_TRUE(r["phase_seconds"].contains(phase)) << phase << " in " << r.dump();
      EXPECT_GE(r["phase_seconds"][phase].get<double>(), 0) << phase;
    }
    // This job has no test set: no evaluation runs, and none is claimed.
    EXPECT_FALSE(r["phase_seconds"].contains("evaluation")) << r.dump();
    EXPECT_FALSE(r.contains("test_accuracy")) << r.dump();
    EXPECT_GT(r["elapsed_seconds"].get<double>(), previous_elapsed);
    previous_elapsed = r["elapsed_seconds"].get<double>();
  }

  absl::StatusOr<nlohmann::json> parsed = cohort::testing::ParseWithPrometheusClient(served.job().MetricsPage());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const nlohmann::json& f = *parsed;
  using cohort::testing::SampleValue;
  EXPECT_EQ(SampleValue(f, "cohort_rounds_completed", "cohort_rounds_completed_total"), 2);
  EXPECT_EQ(SampleValue(f, "cohort_rounds_started", "cohort_rounds_started_total"), 2);
  EXPECT_EQ(SampleValue(f, "cohort_updates_accepted", "cohort_updates_accepted_total"), 4);
  EXPECT_EQ(SampleValue(f, "cohort_updates_rejected", "cohort_updates_rejected_total", {{"reason", "already_exists"}}), 1);
  // Five chunks per model or update, each sealed (16 bytes of tag and more on each).
  const double model_bytes = static_cast<double>(floats * sizeof(float));
  EXPECT_GE(SampleValue(f, "cohort_sent_bytes", "cohort_sent_bytes_total"), 4 * model_bytes);
  EXPECT_GE(SampleValue(f, "cohort_received_bytes", "cohort_received_bytes_total"), 4 * model_bytes);
  EXPECT_EQ(SampleValue(f, "cohort_round_phase_seconds", "cohort_round_phase_seconds_count", {{"phase", "upload"}}), 2);
  EXPECT_EQ(SampleValue(f, "cohort_clients_joined", "cohort_clients_joined"), 2);
  EXPECT_EQ(SampleValue(f, "cohort_clients_live", "cohort_clients_live"), 2);
  EXPECT_EQ(SampleValue(f, "cohort_job_state", "cohort_job_state", {{"state", "finished"}}), 1);
  EXPECT_EQ(SampleValue(f, "cohort_job_state", "cohort_job_state", {{"state", "running"}}), 0);

  const nlohmann::json state = nlohmann::json::parse(served.job().DashboardState());
  EXPECT_EQ(state["job"]["status"], "finished");
  EXPECT_EQ(state["round"]["phase"], "done");
  EXPECT_EQ(state["round"]["number"], 2);
  EXPECT_EQ(state["summary_rounds"], summary["rounds"]);
  EXPECT_EQ(state["sites"].size(), 2u);
  EXPECT_EQ(state["audit_tail"], nlohmann::json::array());  // this job keeps no audit log
}

}  // namespace
}  // namespace cohort::server
