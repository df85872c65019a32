// The server's /metrics and /api/state during a real 3-round `cohort run`: the run prints
// the dashboard's address, /metrics parses with Python's prometheus_client parser with every
// family present, and its values and /api/state agree with the summary.json the job leaves.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/observe/prometheus_parser.h"

namespace {

using cohort::testing::ParseWithPrometheusClient;
using cohort::testing::SampleValue;

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// `cohort run` in the background, its output collected as it comes.
class BackgroundRun {
 public:
  explicit BackgroundRun(const std::string& command) {
    pipe_ = ::popen((command + " 2>&1").c_str(), "r");
    reader_ = std::thread([this] {
      // read(2), not fread: a line is seen as soon as it is written, not once 4 KiB have come.
      char buffer[4096];
      ssize_t n;
      while (pipe_ != nullptr && (n = ::read(::fileno(pipe_), buffer, sizeof(buffer))) > 0) {
        std::lock_guard lock(mu_);
        output_.append(buffer, static_cast<size_t>(n));
      }
      const int status = pipe_ != nullptr ? ::pclose(pipe_) : -1;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      done_ = true;
    });
  }
  ~BackgroundRun() {
    if (reader_.joinable()) reader_.join();
  }
  std::string output() {
    std::lock_guard lock(mu_);
    return output_;
  }
  bool done() const { return done_; }
  int Wait() {
    if (reader_.joinable()) reader_.join();
    return exit_code_;
  }

 private:
  FILE* pipe_ = nullptr;
  std::thread reader_;
  std::mutex mu_;
  std::string output_;
  std::atomic<bool> done_ = false;
  int exit_code_ = -1;
};

TEST(MetricsIntegrationTest, MetricsAndApiStateMatchTheSummaryOfARealThreeRoundJob) {
  std::string templ = "/tmp/cohort-metrics-XXXXXX";
  const std::filesystem::path dir = ::mkdtemp(templ.data());
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "metrics";
  job["training_config"]["local_epochs"] = 1;
  job["federation"]["rounds"] = 3;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["data"]["train_subset"] = 2000;
  job["evaluation"]["test_data"] = COHORT_FASHION_MNIST_DIR;
  job["evaluation"]["max_samples"] = 500;
  std::ofstream(dir / "job.json") << job.dump(2);
  const std::filesystem::path out = dir / "out";

  BackgroundRun run(std::string(COHORT_BINARY) + " run " + (dir / "job.json").string() + " --out " + out.string());
  // `cohort run` prints the dashboard's address at start.
  const std::regex address(R"(dashboard: http://127\.0\.0\.1:(\d+)/)");
  std::smatch match;
  int port = 0;
  for (int i = 0; i < 600 && port == 0 && !run.done(); ++i) {
    const std::string text = run.output();
    if (std::regex_search(text, match, address)) port = std::stoi(match[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(port, 0) << run.output();

  // Polled as the dashboard does, until the job has finished; then /metrics once, while
  // the server still lingers for its clients.
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  nlohmann::json state;
  std::string metrics_page;
  bool saw_training = false;
  for (int i = 0; i < 3000 && !run.done(); ++i) {
    httplib::Result r = client.Get("/api/state");
    if (r && r->status == 200) {
      nlohmann::json parsed = nlohmann::json::parse(r->body, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(parsed.is_discarded()) << r->body;
      if (parsed["round"]["phase"] == "training" && !parsed["round"]["sites"].empty()) saw_training = true;
      if (parsed["job"]["status"] == "finished") {
        state = std::move(parsed);
        httplib::Result m = client.Get("/metrics");
        ASSERT_TRUE(m && m->status == 200);
        EXPECT_EQ(m->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
        metrics_page = m->body;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(run.Wait(), 0) << run.output();
  ASSERT_FALSE(metrics_page.empty()) << "the dashboard never showed the job finished\n" << run.output();
  EXPECT_TRUE(saw_training) << "no poll saw a round open with its sites";
  const nlohmann::json summary = ReadJson(out / "summary.json");
  ASSERT_TRUE(summary.is_object());
  const nlohmann::json& rounds = summary["rounds"];
  ASSERT_EQ(rounds.size(), 3u);

  absl::StatusOr<nlohmann::json> parsed = ParseWithPrometheusClient(metrics_page);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << metrics_page;
  const nlohmann::json& f = *parsed;
  // Counters' families are named without "_total" by the parser.
  for (const char* family :
       {"cohort_rounds_started", "cohort_rounds_completed", "cohort_rounds_retried", "cohort_round_phase_seconds",
        "cohort_updates_accepted", "cohort_updates_rejected", "cohort_received_bytes", "cohort_sent_bytes",
        "cohort_test_loss", "cohort_test_accuracy", "cohort_job_epsilon_spent", "cohort_epsilon_spent",
        "cohort_epsilon_budget_left", "cohort_job_state", "cohort_round", "cohort_job_rounds", "cohort_model_version",
        "cohort_clients_joined", "cohort_clients_live", "cohort_clients_dropped", "cohort_clients_revoked",
        "cohort_clients_declined", "cohort_process_resident_memory_bytes", "cohort_process_cpu_seconds"}) {
    EXPECT_TRUE(f.contains(family)) << family << " missing from\n" << metrics_page;
  }
  EXPECT_EQ(SampleValue(f, "cohort_rounds_completed", "cohort_rounds_completed_total"), 3);
  EXPECT_EQ(SampleValue(f, "cohort_rounds_started", "cohort_rounds_started_total"), 3);
  EXPECT_EQ(SampleValue(f, "cohort_rounds_retried", "cohort_rounds_retried_total"), 0);
  double reported = 0;
  for (const nlohmann::json& r : rounds) reported += r["clients_reported"].get<double>();
  EXPECT_EQ(SampleValue(f, "cohort_updates_accepted", "cohort_updates_accepted_total"), reported);
  EXPECT_DOUBLE_EQ(SampleValue(f, "cohort_test_accuracy", "cohort_test_accuracy"),
                   rounds.back()["test_accuracy"].get<double>());
  EXPECT_DOUBLE_EQ(SampleValue(f, "cohort_test_loss", "cohort_test_loss"), rounds.back()["test_loss"].get<double>());
  EXPECT_EQ(SampleValue(f, "cohort_job_state", "cohort_job_state", {{"state", "finished"}}), 1);
  EXPECT_EQ(SampleValue(f, "cohort_job_rounds", "cohort_job_rounds"), 3);
  EXPECT_EQ(SampleValue(f, "cohort_model_version", "cohort_model_version"),
            rounds.back()["model_version"].get<double>());
  EXPECT_EQ(SampleValue(f, "cohort_clients_joined", "cohort_clients_joined"), 2);
  EXPECT_GT(SampleValue(f, "cohort_sent_bytes", "cohort_sent_bytes_total"), 0);
  EXPECT_GT(SampleValue(f, "cohort_received_bytes", "cohort_received_bytes_total"), 0);
  EXPECT_GT(SampleValue(f, "cohort_process_resident_memory_bytes", "cohort_process_resident_memory_bytes"), 1e6);
  EXPECT_GT(SampleValue(f, "cohort_process_cpu_seconds", "cohort_process_cpu_seconds_total"), 0);

  // Each round's phases: one observation per phase per round, and the phases before the
  // checkpoint add up to the round's wall time (both measured by one clock; the entry's
  // wall time is taken inside the checkpoint phase, just after it starts).
  double previous_elapsed = 0;
  std::map<std::string, double> phase_sums;
  for (const nlohmann::json& r : rounds) {
    ASSERT_TRUE(r.contains("phase_seconds")) << r.dump();
    const nlohmann::json& p = r["phase_seconds"];
    double before_checkpoint = 0;
    for (const char* phase : {"waiting", "training", "upload", "fold"}) {
      ASSERT_TRUE(p.contains(phase)) << p.dump();
      EXPECT_GE(p[phase].get<double>(), 0) << phase;
      before_checkpoint += p[phase].get<double>();
    }
    // The server's test of the round's model ran beside the next round: timed, with its
    // metrics in this round's entry, but not part of the round's wall time.
    ASSERT_TRUE(p.contains("evaluation")) << p.dump();
    EXPECT_GT(p["evaluation"].get<double>(), 0);
    ASSERT_TRUE(r.contains("test_accuracy")) << r.dump();
    ASSERT_TRUE(p.contains("checkpoint")) << p.dump();
    EXPECT_LE(before_checkpoint, r["wall_seconds"].get<double>() + 1e-6) << r.dump();
    EXPECT_NEAR(before_checkpoint, r["wall_seconds"].get<double>(), 0.25) << r.dump();
    for (const auto& [phase, seconds] : p.items()) phase_sums[phase] += seconds.get<double>();
    EXPECT_GT(r["elapsed_seconds"].get<double>(), previous_elapsed);
    previous_elapsed = r["elapsed_seconds"].get<double>();
  }
  for (const auto& [phase, sum] : phase_sums) {
    EXPECT_EQ(SampleValue(f, "cohort_round_phase_seconds", "cohort_round_phase_seconds_count", {{"phase", phase}}), 3)
        << phase;
    EXPECT_NEAR(SampleValue(f, "cohort_round_phase_seconds", "cohort_round_phase_seconds_sum", {{"phase", phase}}), sum,
                1e-6)
        << phase;
  }

  // The example Grafana dashboard asks only for metrics the server exports (the sites'
  // cohort_site_* come from clients).
  std::ifstream grafana(std::filesystem::path(COHORT_SOURCE_DIR) / "examples/monitoring/grafana-dashboard.json");
  const std::string dashboard((std::istreambuf_iterator<char>(grafana)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(nlohmann::json::parse(dashboard, nullptr, false).is_discarded());
  const std::regex metric_name(R"(cohort_[a-z_]+)");
  for (auto it = std::sregex_iterator(dashboard.begin(), dashboard.end(), metric_name); it != std::sregex_iterator();
       ++it) {
    std::string name = it->str();
    if (name.starts_with("cohort_site_") || name == "cohort_federation") continue;
    for (const char* suffix : {"_bucket", "_sum", "_count", "_total"}) {
      if (name.ends_with(suffix)) name.resize(name.size() - std::string(suffix).size());
    }
    EXPECT_TRUE(f.contains(name)) << name << " (in grafana-dashboard.json) is not on /metrics";
  }

  // /api/state: the contract docs/operability.md states, and the summary's own rounds.
  EXPECT_EQ(state["job"]["name"], "metrics");
  EXPECT_EQ(state["job"]["job_type"], "horizontal");
  EXPECT_EQ(state["job"]["rounds_total"], 3);
  EXPECT_GE(state["job"]["elapsed_seconds"].get<double>(), previous_elapsed);
  EXPECT_EQ(state["round"]["number"], 3);
  EXPECT_EQ(state["round"]["phase"], "done");
  for (const nlohmann::json& s : state["round"]["sites"]) EXPECT_EQ(s["phase"], "reported") << s.dump();
  EXPECT_EQ(state["summary_rounds"], rounds);
  ASSERT_EQ(state["sites"].size(), 2u) << state["sites"].dump();
  for (const nlohmann::json& s : state["sites"]) {
    EXPECT_TRUE(s["site"] == "site-0" || s["site"] == "site-1") << s.dump();
    EXPECT_GE(s["last_contact_seconds_ago"].get<double>(), 0) << s.dump();
    EXPECT_TRUE(s["epsilon_spent"].is_null() && s["epsilon_budget"].is_null()) << s.dump();
  }
  ASSERT_TRUE(state["audit_tail"].is_array());
  EXPECT_FALSE(state["audit_tail"].empty());
  EXPECT_LE(state["audit_tail"].size(), 50u);
  // The job's last entry is on the log before the job reads as finished.
  EXPECT_EQ(state["audit_tail"].back()["action"], "job.end") << state["audit_tail"].back().dump();
  std::filesystem::remove_all(dir);
}

}  // namespace
