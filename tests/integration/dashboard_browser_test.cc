// The live dashboard in a real browser. A real 3-round `cohort run` (two sites, a slice of
// Fashion-MNIST) is opened in headless Chromium once its first round has completed and while
// it still runs: the rendered page shows the job running, its completed rounds, the accuracy
// and loss curves drawn (each chart records the pixels its series drew, web/cohort_charts.js)
// and the sites by name. Then a server's dashboard bound to this machine's non-loopback
// address is opened from that address: without the token the page shows nothing of the job,
// with the token the server printed it shows the job. Skipped without chromium.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

const std::string kCohort = COHORT_BINARY;

struct Result {
  int exit_code;
  std::string output;
};

// `command`'s exit code and standard output.
Result RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

bool ChromiumInstalled() { return RunCommand("command -v chromium >/dev/null").exit_code == 0; }

// The page at `url` as headless Chromium leaves it after a few seconds of (virtual) time:
// long enough for the page's first polls of /api/state and their drawing. A fresh profile
// per call, so nothing (a cached reply, a stored token) carries from one look to the next.
Result RenderedDom(const std::string& url, const std::filesystem::path& profile) {
  return RunCommand("timeout 60 chromium --headless --no-sandbox --disable-gpu --no-proxy-server --no-first-run "
                    "--user-data-dir=" + profile.string() + " --virtual-time-budget=5000 --dump-dom '" + url +
                    "' 2>/dev/null");
}

// The opening tag of the element with `id`, as Chromium serializes it; empty if absent.
std::string OpeningTag(const std::string& dom, const std::string& id) {
  const size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const size_t start = dom.rfind('<', at), end = dom.find('>', at);
  if (start == std::string::npos || end == std::string::npos) return "";
  return dom.substr(start, end - start + 1);
}

// The attributes (name to value) of an opening tag; a bare attribute maps to "".
std::map<std::string, std::string> Attributes(const std::string& tag) {
  std::map<std::string, std::string> attributes;
  const std::regex attribute(R"re(\s([a-z-]+)(?:="([^"]*)")?)re");
  for (auto it = std::sregex_iterator(tag.begin(), tag.end(), attribute); it != std::sregex_iterator(); ++it) {
    attributes[(*it)[1]] = (*it)[2];
  }
  return attributes;
}

// The text right after the opening tag of the element with `id`, up to the next tag.
std::string TextOf(const std::string& dom, const std::string& id) {
  const size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const size_t start = dom.find('>', at) + 1;
  return dom.substr(start, dom.find('<', start) - start);
}

// The element with `id` and everything in it, for elements that do not nest in their own kind.
std::string ElementOf(const std::string& dom, const std::string& id, const std::string& tag_name) {
  const size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const size_t start = dom.rfind('<', at), end = dom.find("</" + tag_name + ">", at);
  return end == std::string::npos ? "" : dom.substr(start, end - start);
}

int IntegerOr(const std::map<std::string, std::string>& attributes, const std::string& name, int fallback) {
  const auto it = attributes.find(name);
  return it == attributes.end() || it->second.empty() ? fallback : std::stoi(it->second);
}

// A child process run from `argv` (no shell), its stdout and stderr collected as they come.
// The destructor ends one that still runs with SIGTERM (`cohort run` then stops its server
// and clients), so a failed check never leaves a federation behind.
class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    if (pid_ < 0) {
      ::close(fds[0]);
      return;
    }
    reader_ = std::thread([this, fd = fds[0]] {
      char buffer[4096];
      ssize_t n;
      while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
        std::lock_guard lock(mu_);
        output_.append(buffer, static_cast<size_t>(n));
      }
      ::close(fd);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      done_ = true;
    });
  }
  ~ChildProcess() {
    if (pid_ > 0 && !done_) ::kill(pid_, SIGTERM);
    if (reader_.joinable()) reader_.join();
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  std::string output() {
    std::lock_guard lock(mu_);
    return output_;
  }
  bool done() const { return done_; }
  int Wait() {
    if (reader_.joinable()) reader_.join();
    return exit_code_;
  }
  // The first match of `pattern` in the output within `seconds`, or nullopt (also when the
  // process ends without printing it).
  std::optional<std::smatch> WaitFor(const std::regex& pattern, int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      const bool ended = done_;
      seen_ = output();
      std::smatch match;
      if (std::regex_search(seen_, match, pattern)) return match;
      if (ended) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::string output_;
  std::string seen_;  // what the last WaitFor matched against; its matches point into it
  std::atomic<bool> done_ = false;
  int exit_code_ = -1;
};

// An IPv4 address of this machine that is not loopback (eth0's, say), if it has one.
std::optional<std::string> NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::string> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN];
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) == nullptr) continue;
    if (!std::string(text).starts_with("127.")) found = text;
  }
  ::freeifaddrs(list);
  return found;
}

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

// A small real job: the Fashion-MNIST CNN, two sites, three rounds. Each site trains on
// 30,000 rows for three local epochs (about 10 s a round on two cores), so that the two
// rounds after the first leave headless Chromium, which takes about 7 s to look at the page
// while the job trains beside it, time to see the job still running.
nlohmann::json SmallJob(const std::string& name) {
  std::ifstream in(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  nlohmann::json job = nlohmann::json::parse(in);
  job["job"]["name"] = name;
  job["training_config"]["local_epochs"] = 3;
  job["federation"]["rounds"] = 3;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["data"]["train_subset"] = 60000;
  job["evaluation"]["test_data"] = COHORT_FASHION_MNIST_DIR;
  job["evaluation"]["max_samples"] = 500;
  return job;
}

class DashboardBrowserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = "/tmp/cohort-dashboard-browser-XXXXXX";
    dir_ = ::mkdtemp(templ.data());
  }
  void TearDown() override {
    std::error_code ec;
    if (!HasFailure()) std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
};

TEST_F(DashboardBrowserTest, ARunningJobShowsItsStateRoundsCurvesAndSites) {
  if (!ChromiumInstalled()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  std::ofstream(dir_ / "job.json") << SmallJob("browser-check").dump(2);
  ChildProcess run({kCohort, "run", (dir_ / "job.json").string(), "--out", (dir_ / "out").string()});

  const std::optional<std::smatch> address = run.WaitFor(std::regex(R"(dashboard: (http://127\.0\.0\.1:\d+/))"), 60);
  ASSERT_TRUE(address) << "`cohort run` printed no dashboard address:\n" << run.output();
  const std::string url = (*address)[1];
  // The run's progress line for a completed round: "round   1/3  clients 2  train loss ...".
  ASSERT_TRUE(run.WaitFor(std::regex(R"(\nround +1/3 +clients)"), 120))
      << "round 1 never completed:\n" << run.output();

  const Result dom = RenderedDom(url, dir_ / "chromium-profile");
  ASSERT_EQ(dom.exit_code, 0) << dom.output;
  // Looked at while the job runs: otherwise the rounds were too short for this check.
  ASSERT_EQ(TextOf(dom.output, "job-status"), "running")
      << "the page did not show the job running (did it finish before the browser looked?)\n"
      << run.output() << "\n" << dom.output;
  EXPECT_EQ(TextOf(dom.output, "job-name"), "browser-check");
  EXPECT_TRUE(Attributes(OpeningTag(dom.output, "notice")).contains("hidden"))
      << "the page shows a notice: " << TextOf(dom.output, "notice");

  // Completed rounds: the page's own count, and the facts line a reader sees.
  std::smatch rendered;
  ASSERT_TRUE(std::regex_search(dom.output, rendered, std::regex(R"re(<body[^>]*data-rendered="(\d+)")re")))
      << "the page never rendered a state from /api/state\n" << dom.output;
  const int rounds = std::stoi(rendered[1]);
  EXPECT_GE(rounds, 1);
  EXPECT_LE(rounds, 3);
  EXPECT_NE(TextOf(dom.output, "job-facts").find(std::to_string(rounds) + " of 3 rounds completed"), std::string::npos)
      << TextOf(dom.output, "job-facts");

  // The curves: a series per line (global test, clients' weighted, one per site), and the
  // pixels they drew over the grid. A chart that drew its axes but no data reads 0; after
  // one round its four dots read about 40, after two or more rounds its lines thousands.
  constexpr int kDrawn = 20;
  for (const char* chart : {"chart-accuracy", "chart-loss"}) {
    const std::map<std::string, std::string> a = Attributes(OpeningTag(dom.output, chart));
    EXPECT_EQ(IntegerOr(a, "data-rounds", -1), rounds) << chart;
    EXPECT_EQ(IntegerOr(a, "data-series", -1), 4) << chart;
    EXPECT_GT(IntegerOr(a, "data-series-pixels", 0), kDrawn)
        << chart << " drew no curve: " << OpeningTag(dom.output, chart);
  }
  const std::map<std::string, std::string> time_chart = Attributes(OpeningTag(dom.output, "chart-time"));
  EXPECT_GT(IntegerOr(time_chart, "data-series-pixels", 0), kDrawn)
      << "no bar of round time: " << OpeningTag(dom.output, "chart-time");
  // The server tests each model beside the next round: a line beside the bars, not a band
  // stacked on the round's own time.
  EXPECT_EQ(time_chart.contains("data-evaluation") ? time_chart.at("data-evaluation") : "", "beside")
      << OpeningTag(dom.output, "chart-time");
  EXPECT_NE(dom.output.find("<canvas"), std::string::npos);

  const std::string sites = ElementOf(dom.output, "sites", "table");
  for (const char* site : {"site-0", "site-1"}) {
    EXPECT_NE(sites.find(std::string("<td>") + site + "</td>"), std::string::npos) << site << " not listed:\n" << sites;
  }

  ASSERT_EQ(run.Wait(), 0) << run.output();
  std::ifstream summary_file(dir_ / "out" / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_file, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(summary.is_object());
  EXPECT_EQ(summary["rounds"].size(), 3u);
}

TEST_F(DashboardBrowserTest, OffLoopbackThePageShowsNothingOfTheJobWithoutTheToken) {
  if (!ChromiumInstalled()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs it)";
  const std::optional<std::string> ip = NonLoopbackAddress();
  if (!ip) GTEST_SKIP() << "this machine has no non-loopback IPv4 address to bind the dashboard to";
  // A server waiting for its sites is enough: its /api/state names the job from the start.
  const std::string name = "offloop-browser-check";
  std::ofstream(dir_ / "job.json") << SmallJob(name).dump(2);
  ChildProcess server({kCohort, "server", "--config", (dir_ / "job.json").string(), "--insecure", "--listen",
                       "127.0.0.1:" + std::to_string(FreeLoopbackPort()), "--out", (dir_ / "out").string(), "--state",
                       (dir_ / "server-state").string(), "--metrics-listen", *ip + ":0"});
  // Off loopback the server prints the address with its token in the fragment.
  const std::optional<std::smatch> printed =
      server.WaitFor(std::regex(R"(dashboard: (http://[0-9.]+:\d+/)#token=([0-9a-f]+))"), 60);
  ASSERT_TRUE(printed) << "the server printed no off-loopback dashboard address:\n" << server.output();
  const std::string url = (*printed)[1], token = (*printed)[2];
  ASSERT_NE(url.find(*ip), std::string::npos) << url;

  const Result refused = RenderedDom(url, dir_ / "profile-without-token");
  ASSERT_EQ(refused.exit_code, 0) << refused.output;
  // The page itself loads (its files are the same for every server) and says why it is empty.
  EXPECT_FALSE(Attributes(OpeningTag(refused.output, "notice")).contains("hidden")) << refused.output;
  EXPECT_NE(TextOf(refused.output, "notice").find("Not authorized"), std::string::npos)
      << TextOf(refused.output, "notice");
  EXPECT_EQ(refused.output.find(name), std::string::npos) << "the job's name reached the page:\n" << refused.output;
  EXPECT_EQ(TextOf(refused.output, "job-name"), "Cohort");
  EXPECT_EQ(refused.output.find("data-rendered"), std::string::npos) << "the page rendered a state";
  EXPECT_EQ(refused.output.find("data-rounds"), std::string::npos) << "the page drew charts";

  // The same address with the token the server printed: the job shows, so the empty page
  // above was the refusal and not a page that shows nothing anyway.
  const Result allowed = RenderedDom(url + "#token=" + token, dir_ / "profile-with-token");
  ASSERT_EQ(allowed.exit_code, 0) << allowed.output;
  EXPECT_EQ(TextOf(allowed.output, "job-name"), name) << allowed.output;
  EXPECT_TRUE(Attributes(OpeningTag(allowed.output, "notice")).contains("hidden")) << TextOf(allowed.output, "notice");
  EXPECT_NE(allowed.output.find("data-rendered=\"0\""), std::string::npos);
}

}  // namespace
