// `cohort report` and `--tensorboard` on a real job: one 3-round `cohort run` (three
// client processes, a slice of Fashion-MNIST), then its report read as a user would:
// the HTML holds the data and loads nothing from outside, the SVGs are XML with a point
// per round, headless Chromium renders the page (rounds, drawn charts, site names), and
// the TensorBoard event file holds summary.json's values.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>

#include <nlohmann/json.hpp>

namespace {

struct Result {
  int exit_code;
  std::string output;
};

Result RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  return nlohmann::json::parse(ReadText(path), nullptr, /*allow_exceptions=*/false);
}

const std::string kCohort = COHORT_BINARY;
const std::filesystem::path kSource = COHORT_SOURCE_DIR;

// The data the report carries: the JSON after "window.COHORT_DATA = ".
nlohmann::json ReportData(const std::string& html) {
  const std::string marker = "window.COHORT_DATA = ";
  const size_t start = html.find(marker);
  if (start == std::string::npos) return nullptr;
  const size_t end = html.find(";</script>", start);
  if (end == std::string::npos) return nullptr;
  return nlohmann::json::parse(html.substr(start + marker.size(), end - start - marker.size()), nullptr, false);
}

class ReportTest : public ::testing::Test {
 protected:
  // One real job for every test of the suite: 3 rounds, 3 sites, TensorBoard on.
  static void SetUpTestSuite() {
    std::string pattern = "/tmp/cohort-report-XXXXXX";
    dir_ = new std::filesystem::path(::mkdtemp(pattern.data()));
    nlohmann::json job = ReadJson(kSource / "configs/fashion_mnist_cnn_iid.json");
    job["job"]["name"] = "report-check";
    job["training_config"]["local_epochs"] = 1;
    job["federation"]["rounds"] = 3;
    job["federation"]["clients_per_round"] = 3;
    job["federation"]["min_clients"] = 3;
    job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
    job["data"]["train_subset"] = 3000;
    job["evaluation"]["test_data"] = COHORT_FASHION_MNIST_DIR;
    job["evaluation"]["max_samples"] = 1000;
    std::ofstream(*dir_ / "job.json") << job.dump(2);
    run_ = new Result(RunCommand(kCohort + " run " + (*dir_ / "job.json").string() + " --out " + out().string() +
                                 " --tensorboard " + (*dir_ / "tb").string()));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete run_;
  }
  void SetUp() override { ASSERT_EQ(run_->exit_code, 0) << run_->output; }

  static std::filesystem::path out() { return *dir_ / "out"; }
  static nlohmann::json Summary() { return ReadJson(out() / "summary.json"); }

  static std::filesystem::path* dir_;
  static Result* run_;
};
std::filesystem::path* ReportTest::dir_ = nullptr;
Result* ReportTest::run_ = nullptr;

TEST_F(ReportTest, TheHtmlCarriesEveryRoundAndTheSitesAndLoadsNothingFromOutside) {
  const Result report = RunCommand(kCohort + " report " + out().string());
  ASSERT_EQ(report.exit_code, 0) << report.output;
  const std::filesystem::path html_path = out() / "report" / "report.html";
  const std::string html = ReadText(html_path);
  ASSERT_FALSE(html.empty());
  // Self-contained: no src or href that leaves the file, no <script src> or stylesheet link at all.
  EXPECT_FALSE(std::regex_search(html, std::regex(R"((src|href)\s*=\s*["']?\s*(https?:)?//)", std::regex::icase)));
  EXPECT_EQ(html.find("<script src"), std::string::npos);
  EXPECT_EQ(html.find("<link rel=\"stylesheet\""), std::string::npos);
  EXPECT_NE(html.find("uPlot"), std::string::npos) << "the charting library is inlined";

  const nlohmann::json data = ReportData(html);
  ASSERT_TRUE(data.is_object()) << "no window.COHORT_DATA in " << html_path;
  const nlohmann::json summary = Summary();
  ASSERT_EQ(data["summary_rounds"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(data["summary_rounds"][i]["test_accuracy"], summary["rounds"][i]["test_accuracy"]);
  }
  EXPECT_EQ(data["job"]["name"], "report-check");
  EXPECT_EQ(data["job"]["status"], "finished");
  EXPECT_EQ(data["job"]["rounds_total"], 3);
  ASSERT_EQ(data["sites"].size(), 3u);
  for (const nlohmann::json& site : data["sites"]) {
    EXPECT_EQ(site["status"], "live") << site;
    EXPECT_TRUE(site.contains("last_contact_time")) << site;
  }
  ASSERT_FALSE(data["audit_tail"].empty());
  EXPECT_EQ(data["audit_tail"].back()["action"], "job.end");
}

TEST_F(ReportTest, TheSvgPlotsAreXmlWithOnePointPerRound) {
  const std::filesystem::path html = *dir_ / "elsewhere" / "fig.html";
  const Result report = RunCommand(kCohort + " report " + out().string() + " --out " + html.string());
  ASSERT_EQ(report.exit_code, 0) << report.output;
  // python3's XML parser: the figures are well-formed, and each series has a circle per
  // round it has a value for: 3 for the global curves.
  const std::string check = R"(
import json, sys, xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
counts = {}
for name in ("accuracy", "loss", "round_time"):
    root = ET.parse(sys.argv[1] + "/fig-" + name + ".svg").getroot()
    for g in root.findall("s:g", ns):
        counts[name + ":" + g.get("data-name")] = len(g.findall("s:circle", ns))
print(json.dumps(counts))
)";
  std::ofstream(*dir_ / "svg_check.py") << check;
  const Result parsed = RunCommand("/usr/bin/python3 " + (*dir_ / "svg_check.py").string() + " " +
                                   html.parent_path().string());
  ASSERT_EQ(parsed.exit_code, 0) << parsed.output;
  const nlohmann::json counts = nlohmann::json::parse(parsed.output, nullptr, false);
  ASSERT_TRUE(counts.is_object()) << parsed.output;
  EXPECT_EQ(counts["accuracy:global test accuracy"], 3) << counts;
  EXPECT_EQ(counts["loss:global test loss"], 3) << counts;
  EXPECT_EQ(counts["accuracy:site-2 eval accuracy"], 3) << counts;
  EXPECT_EQ(counts["round_time:round"], 3) << counts;
}

TEST_F(ReportTest, HeadlessChromiumRendersTheRoundsChartsAndSites) {
  if (RunCommand("command -v chromium").exit_code != 0) {
    GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  }
  const std::filesystem::path html = *dir_ / "browser" / "report.html";
  ASSERT_EQ(RunCommand(kCohort + " report " + out().string() + " --out " + html.string()).exit_code, 0);
  const Result dom = RunCommand("chromium --headless --disable-gpu --no-sandbox --user-data-dir=" +
                                (*dir_ / "chromium-profile").string() +
                                " --virtual-time-budget=5000 --dump-dom file://" + html.string() + " 2>/dev/null");
  ASSERT_EQ(dom.exit_code, 0) << dom.output;
  EXPECT_NE(dom.output.find("data-rendered=\"3\""), std::string::npos) << "the page rendered 3 rounds";
  for (const char* chart : {"chart-accuracy", "chart-loss", "chart-time"}) {
    // The chart's own record of what it drew: rounds, and the pixels its series (curves,
    // points, bars) added over the axes and grid, which stay 0 for a chart without data.
    std::smatch tag, pixels;
    const std::regex element(std::string("<[a-z]+ [^>]*id=\"") + chart + "\"[^>]*>");
    ASSERT_TRUE(std::regex_search(dom.output, tag, element)) << chart << " not on the page";
    const std::string attributes = tag[0];
    EXPECT_NE(attributes.find("data-rounds=\"3\""), std::string::npos) << attributes;
    ASSERT_TRUE(std::regex_search(attributes, pixels, std::regex(R"re(data-series-pixels="(\d+)")re"))) << attributes;
    EXPECT_GT(std::stoi(pixels[1]), 20) << chart << " drew no series";
  }
  EXPECT_NE(dom.output.find("<canvas"), std::string::npos);
  for (const char* site : {"site-0", "site-1", "site-2"}) {
    EXPECT_NE(dom.output.find(std::string("<td>") + site + "</td>"), std::string::npos) << site;
  }
  EXPECT_NE(dom.output.find("report-check"), std::string::npos);
}

TEST_F(ReportTest, ARunningJobIsReportedFromItsCheckpoint) {
  // A job in progress has no summary.json yet: only its checkpoint, audit log and job.json.
  const std::filesystem::path running = *dir_ / "running";
  std::filesystem::create_directories(running);
  for (const char* file : {"checkpoint.bin", "audit.log", "job.json"}) {
    std::filesystem::copy_file(out() / file, running / file);
  }
  const Result report = RunCommand(kCohort + " report " + running.string());
  ASSERT_EQ(report.exit_code, 0) << report.output;
  const nlohmann::json data = ReportData(ReadText(running / "report" / "report.html"));
  ASSERT_TRUE(data.is_object());
  EXPECT_EQ(data["summary_rounds"].size(), 3u);
  EXPECT_NE(data["report"]["source"].get<std::string>().find("checkpoint.bin"), std::string::npos);
  EXPECT_EQ(data["job"]["rounds_total"], 3) << "from job.json";
}

TEST_F(ReportTest, ADirectoryWithoutAJobIsBadInputNamingIt) {
  const Result report = RunCommand(kCohort + " report " + (*dir_ / "nothing-here").string());
  EXPECT_EQ(report.exit_code, 2) << report.output;
  EXPECT_NE(report.output.find("neither summary.json nor checkpoint.bin"), std::string::npos) << report.output;
}

TEST_F(ReportTest, TheTensorBoardEventFileHoldsSummaryJsonsValues) {
  std::filesystem::path events;
  for (const auto& entry : std::filesystem::directory_iterator(*dir_ / "tb")) {
    if (entry.path().filename().string().find("tfevents") != std::string::npos) events = entry.path();
  }
  ASSERT_FALSE(events.empty()) << "no event file in " << (*dir_ / "tb");
  const Result read = RunCommand("/usr/bin/python3 " + (kSource / "tests/server/read_tfevents.py").string() + " " +
                                 events.string() + " " + (kSource / "tests/server/tensorboard_event.proto").string());
  if (read.exit_code == 77) GTEST_SKIP() << read.output;
  ASSERT_EQ(read.exit_code, 0) << read.output;
  const nlohmann::json tb = nlohmann::json::parse(read.output, nullptr, false);
  ASSERT_TRUE(tb.is_object()) << read.output;
  const nlohmann::json summary = Summary();
  ASSERT_EQ(tb["steps"].size(), 3u) << read.output;
  for (const nlohmann::json& round : summary["rounds"]) {
    const nlohmann::json& step = tb["steps"][std::to_string(round["round"].get<int>())];
    // float32 in the event file
    EXPECT_NEAR(step["test/accuracy"].get<double>(), round["test_accuracy"].get<double>(), 1e-6);
    EXPECT_NEAR(step["test/loss"].get<double>(), round["test_loss"].get<double>(), 1e-5);
    EXPECT_NEAR(step["train/loss"].get<double>(), round["train_loss"].get<double>(), 1e-5);
    EXPECT_NEAR(step["client_eval/accuracy"].get<double>(), round["client_eval_accuracy"].get<double>(), 1e-6);
    EXPECT_GT(step["round/seconds"].get<double>(), 0);
    for (const nlohmann::json& c : round["clients"]) {
      EXPECT_NEAR(step["client_eval/" + c["site"].get<std::string>() + "/accuracy"].get<double>(),
                  c["eval_accuracy"].get<double>(), 1e-6);
    }
  }
}

}  // namespace
