// The whole product as a user runs it: `cohort run` starts a server and three clients as
// separate processes talking gRPC over loopback, trains on real Fashion-MNIST rows, and
// leaves a model that Python's torch loads and evaluates independently.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/job_config.h"

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

std::filesystem::path TempDir(const char* name) {
  std::string templ = std::string("/tmp/cohort-") + name + "-XXXXXX";
  return ::mkdtemp(templ.data());
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// A 2-round job on 6,000 training rows, written next to the test's output.
std::filesystem::path WriteSmallJob(const std::filesystem::path& dir) {
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "integration";
  job["training_config"]["local_epochs"] = 2;
  job["federation"]["rounds"] = 2;
  job["federation"]["clients_per_round"] = 3;
  job["federation"]["min_clients"] = 3;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["data"]["train_subset"] = 6000;
  job["evaluation"]["test_data"] = COHORT_FASHION_MNIST_DIR;
  job["evaluation"]["max_samples"] = 2000;
  const std::filesystem::path path = dir / "small_job.json";
  std::ofstream(path) << job.dump(2);
  return path;
}

TEST(FederationTest, ThreeClientProcessesTrainTheModelWellAboveChanceInTwoRounds) {
  const std::filesystem::path dir = TempDir("integration");
  const std::filesystem::path job = WriteSmallJob(dir);
  const std::filesystem::path out = dir / "out";
  const Result run = RunCommand(std::string(COHORT_BINARY) + " run " + job.string() + " --out " + out.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("round   2/2"), std::string::npos) << run.output;

  const nlohmann::json summary = ReadJson(out / "summary.json");
  ASSERT_TRUE(summary.is_object()) << run.output;
  EXPECT_EQ(summary["status"], "finished");
  ASSERT_EQ(summary["rounds"].size(), 2u);
  const nlohmann::json& last = summary["rounds"][1];
  EXPECT_EQ(last["clients_reported"], 3);
  EXPECT_EQ(last["samples"], 3 * 1800);  // 6,000 rows in three shards, 10% held out by each
  const double first_accuracy = summary["rounds"][0]["test_accuracy"].get<double>();
  const double accuracy = last["test_accuracy"].get<double>();
  EXPECT_GT(accuracy, 0.5) << "chance is 0.1";
  EXPECT_GT(accuracy, first_accuracy);
  EXPECT_TRUE(std::filesystem::exists(out / "model.json"));
  EXPECT_TRUE(std::filesystem::exists(out / "checkpoint.bin"));
  // The processes talked mutual TLS with a throwaway federation's kits.
  std::ifstream server_log(out / "logs" / "server.log");
  const std::string log((std::istreambuf_iterator<char>(server_log)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("over mutual TLS"), std::string::npos) << log;
  EXPECT_TRUE(std::filesystem::exists(out / "pki" / "site-0" / "cert.pem"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::filesystem::exists(out / "logs" / ("site-" + std::to_string(i) + ".log")));
  }

  // Independent check: Python's torch loads model.pt (weights_only) into the twin model
  // built from model.json and scores the full test set.
  if (RunCommand("/usr/bin/python3 -c 'import torch'").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch) to check model.pt";
  }
  const Result evaluated = RunCommand("/usr/bin/python3 " + std::string(COHORT_SOURCE_DIR) +
                               "/examples/python/evaluate.py --json --data " + COHORT_FASHION_MNIST_DIR + " " +
                               out.string());
  ASSERT_EQ(evaluated.exit_code, 0) << evaluated.output;
  const nlohmann::json independent = nlohmann::json::parse(evaluated.output, nullptr, false);
  ASSERT_TRUE(independent.is_object()) << evaluated.output;
  EXPECT_EQ(independent["parameters"], 44426);
  EXPECT_GT(independent["test_accuracy"].get<double>(), 0.5);
  std::filesystem::remove_all(dir);
}

TEST(FederationTest, AConfigWithAnUnknownKeyIsRefusedWithExitCode2NamingTheKey) {
  const std::filesystem::path dir = TempDir("badconfig");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["training_config"]["learnin_rate"] = 0.1;
  std::ofstream(dir / "job.json") << job.dump();
  const Result run = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "job.json").string() + " --out " +
                         (dir / "out").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("training_config.learnin_rate: unknown key"), std::string::npos) << run.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out" / "summary.json"));
  std::filesystem::remove_all(dir);
}

TEST(FederationTest, AServerConfigWithAWrongTypeIsRefusedWithExitCode2) {
  const std::filesystem::path dir = TempDir("badtype");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["federation"]["rounds"] = "ten";
  std::ofstream(dir / "job.json") << job.dump();
  const Result run = RunCommand(std::string(COHORT_BINARY) + " server --config " + (dir / "job.json").string() +
                         " --insecure --listen 127.0.0.1:0 --out " + (dir / "out").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("federation.rounds: expected an integer in [1, 1000000], got \"ten\""), std::string::npos)
      << run.output;
  std::filesystem::remove_all(dir);
}

// Starts `cohort ARGS...` with output to `log`; returns its pid.
pid_t Spawn(const std::vector<std::string>& args, const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  FILE* out = std::freopen(log.c_str(), "w", stdout);
  if (out != nullptr) ::dup2(::fileno(stdout), STDERR_FILENO);
  std::vector<char*> argv;
  std::string binary = COHORT_BINARY;
  argv.push_back(binary.data());
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(binary.c_str(), argv.data());
  std::_Exit(127);
}

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool WaitForText(const std::filesystem::path& path, const std::string& text, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (ReadText(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int WaitExit(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -2;
}

TEST(FederationTest, AServerKilledMidJobResumesFromItsCheckpointAndTheClientsCarryOn) {
  const std::filesystem::path dir = TempDir("resume");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "resume";
  job["federation"]["rounds"] = 3;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["evaluation"]["test_data"] = "";
  std::ofstream(dir / "job.json") << job.dump();
  const std::string port = std::to_string(20000 + ::getpid() % 20000);
  const std::vector<std::string> server_args = {"server", "--insecure", "--config", (dir / "job.json").string(),
                                                "--listen", "127.0.0.1:" + port, "--out", (dir / "out").string(),
                                                "--state", (dir / "state").string()};
  pid_t server = Spawn(server_args, dir / "server1.log");
  std::vector<pid_t> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(Spawn({"client", "--insecure", "--server", "127.0.0.1:" + port, "--site", "s" + std::to_string(i),
                             "--data", COHORT_FASHION_MNIST_DIR, "--train-subset", "2000", "--shard",
                             std::to_string(i) + "/2"},
                            dir / ("client" + std::to_string(i) + ".log")));
  }
  ASSERT_TRUE(WaitForText(dir / "server1.log", "round=1/3 done", 120)) << ReadText(dir / "server1.log");
  ::kill(server, SIGKILL);
  ::waitpid(server, nullptr, 0);

  server = Spawn(server_args, dir / "server2.log");
  EXPECT_EQ(WaitExit(server, 180), 0) << ReadText(dir / "server2.log");
  for (pid_t c : clients) EXPECT_EQ(WaitExit(c, 30), 0);
  const std::string log = ReadText(dir / "server2.log");
  EXPECT_NE(log.find("resuming after round"), std::string::npos) << log;
  EXPECT_EQ(log.find("round=1/3 done"), std::string::npos) << "round 1 ran again:\n" << log;
  const nlohmann::json summary = ReadJson(dir / "out" / "summary.json");
  ASSERT_TRUE(summary.is_object());
  EXPECT_EQ(summary["status"], "finished");
  ASSERT_EQ(summary["rounds"].size(), 3u);
  for (const auto& round : summary["rounds"]) EXPECT_EQ(round["samples"], 1800) << round.dump();
  std::filesystem::remove_all(dir);
}

// The scenario: an admin changes the learning rate while `cohort run` trains. The
// change lands at the next round boundary, the clients train with it from then on, the
// summary shows it, and the signed audit log says who changed it from what to what.
TEST(FederationTest, ALiveLearningRateChangeTakesEffectAtTheNextRoundAndIsAudited) {
  const std::filesystem::path dir = TempDir("live-set");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "live-set";
  job["training_config"]["learning_rate"] = 0.01;
  job["training_config"]["lr_scheduler"] = "constant";
  job["training_config"]["warmup_steps"] = 0;
  job["training_config"]["local_epochs"] = 2;
  job["federation"]["rounds"] = 5;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["data"]["train_subset"] = 6000;
  job["evaluation"]["test_data"] = "";
  std::ofstream(dir / "job.json") << job.dump();
  const std::filesystem::path out = dir / "out";
  const pid_t run = Spawn({"run", (dir / "job.json").string(), "--out", out.string()}, dir / "run.log");
  ASSERT_TRUE(WaitForText(out / "logs" / "server.log", "round=1/5 started", 120)) << ReadText(dir / "run.log");
  const std::string run_log = ReadText(dir / "run.log");
  const size_t at = run_log.find("server on ");
  ASSERT_NE(at, std::string::npos) << run_log;
  const std::string address = run_log.substr(at + 10, run_log.find(';', at) - at - 10);

  const Result set = RunCommand(std::string(COHORT_BINARY) + " admin --kit " + (out / "pki" / "operator").string() +
                                " --server " + address +
                                " --json set learning_rate 0.05 --reason 'loss plateaued'");
  ASSERT_EQ(set.exit_code, 0) << set.output;
  const nlohmann::json change = nlohmann::json::parse(set.output.substr(set.output.find('{')), nullptr, false);
  ASSERT_TRUE(change.is_object()) << set.output;
  const uint64_t from_round = change["applies_at_round"].get<uint64_t>();
  EXPECT_GE(from_round, 2u);
  EXPECT_LE(from_round, 4u);  // a round takes seconds: the change lands well before the last
  // An invalid change is refused with exit code 2 and changes nothing.
  const Result bad = RunCommand(std::string(COHORT_BINARY) + " admin --kit " + (out / "pki" / "operator").string() +
                                " --server " + address + " set learning_rate -1");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("training_config.learning_rate"), std::string::npos) << bad.output;
  // An auditor may not change anything.
  const Result auditor = RunCommand(std::string(COHORT_BINARY) + " admin --kit " + (out / "pki" / "auditor").string() +
                                    " --server " + address + " set learning_rate 0.2");
  EXPECT_EQ(auditor.exit_code, 1) << auditor.output;
  EXPECT_NE(auditor.output.find("job.set_parameter"), std::string::npos) << auditor.output;

  ASSERT_EQ(WaitExit(run, 300), 0) << ReadText(dir / "run.log");
  const nlohmann::json summary = ReadJson(out / "summary.json");
  ASSERT_TRUE(summary.is_object());
  ASSERT_EQ(summary["rounds"].size(), 5u);
  for (const auto& round : summary["rounds"]) {
    const uint64_t r = round["round"].get<uint64_t>();
    EXPECT_EQ(round["training"]["learning_rate"], r >= from_round ? 0.05 : 0.01) << round.dump();
    if (r == from_round) {
      ASSERT_EQ(round["parameter_changes"].size(), 1u) << round.dump();
      EXPECT_EQ(round["parameter_changes"][0]["by"], "operator");
      EXPECT_EQ(round["parameter_changes"][0]["new"], 0.05);
    }
  }
  // The clients trained with it: their logs show the new rate from that round on.
  EXPECT_NE(ReadText(out / "logs" / "site-0.log").find("lr 0.05"), std::string::npos);

  const std::string log = (out / "audit.log").string();
  const Result verified = RunCommand(std::string(COHORT_BINARY) + " audit verify " + log + " --key " +
                                     (out / "audit" / "audit.pub").string());
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  const Result shown =
      RunCommand(std::string(COHORT_BINARY) + " audit show " + log + " --parameter learning_rate --json");
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  bool found_change = false, found_refusal = false;
  std::istringstream lines(shown.output);
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
    if (!entry.is_object()) continue;
    if (entry["action"] == "param.set") {
      found_change = true;
      EXPECT_EQ(entry["actor"], "operator");
      EXPECT_EQ(entry["role"], "admin");
      EXPECT_EQ(entry["old"], 0.01);
      EXPECT_EQ(entry["new"], 0.05);
    }
    if (entry["action"] == "param.set.refused") found_refusal = true;
  }
  EXPECT_TRUE(found_change) << shown.output;
  EXPECT_TRUE(found_refusal) << shown.output;
  std::filesystem::remove_all(dir);
}

// DP-SGD with a per-site budget: each site records every round's spend in its own ledger
// before it trains, the server mirrors the spends and shows epsilon per round and site,
// and when the next round would exceed a site's budget the site declines and the job ends
// early, since too few sites are left.
TEST(FederationTest, SitesDeclineOnceTheirPrivacyBudgetIsSpentAndTheJobEndsEarly) {
  const std::filesystem::path dir = TempDir("dp-budget");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "dp-budget";
  job["training_config"]["max_grad_norm"] = 0.0;
  job["training_config"]["batch_size"] = 64;
  job["training_config"]["local_epochs"] = 1;
  job["federation"]["rounds"] = 5;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["data"]["train_subset"] = 2000;  // 900 training rows per site: q = 64/900, 15 steps a round
  job["evaluation"]["test_data"] = "";
  // Epsilon after 1, 2, 3 rounds at sigma 1: about 2.99, 3.64, 4.16: the third does not fit.
  job["privacy"] = {{"mechanism", "dp_sgd"},
                    {"target_epsilon", 4.0},
                    {"target_delta", 1e-5},
                    {"noise_multiplier", 1.0},
                    {"clip_norm", 1.0}};
  std::ofstream(dir / "job.json") << job.dump();
  const std::filesystem::path out = dir / "out";
  const Result run = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "job.json").string() + " --out " +
                                out.string());
  ASSERT_EQ(run.exit_code, 0) << run.output << ReadText(out / "logs" / "server.log");
  const nlohmann::json summary = ReadJson(out / "summary.json");
  ASSERT_TRUE(summary.is_object());
  EXPECT_EQ(summary["status"], "finished");
  EXPECT_TRUE(summary.contains("ended_early")) << summary.dump(2);
  ASSERT_EQ(summary["rounds"].size(), 2u) << summary.dump(2);
  for (const auto& round : summary["rounds"]) {
    for (const auto& client : round["clients"]) {
      const double epsilon = client["privacy"]["epsilon"].get<double>();
      EXPECT_LE(epsilon, 4.0);
      EXPECT_NEAR(epsilon, round["round"] == 1 ? 2.99 : 3.64, 0.05) << client.dump();
      EXPECT_NEAR(client["privacy"]["job_epsilon"].get<double>(), epsilon, 1e-9);  // the server's mirror agrees
    }
  }
  // Each site's ledger holds its two spends; the site log says why it stopped.
  for (const std::string site : {"site-0", "site-1"}) {
    const std::string ledger = ReadText(out / "sites" / site / "privacy-ledger.jsonl");
    EXPECT_EQ(std::count(ledger.begin(), ledger.end(), '\n'), 3) << ledger;  // header + 2 spends
    EXPECT_NE(ReadText(out / "logs" / (site + ".log")).find("will not train: privacy budget"), std::string::npos);
    EXPECT_TRUE(std::filesystem::exists(out / "ledgers" / (site + ".ledger")));
  }
  const Result audit = RunCommand(std::string(COHORT_BINARY) + " audit show " + (out / "audit.log").string() +
                                  " --action privacy.spend --json");
  EXPECT_EQ(std::count(audit.output.begin(), audit.output.end(), '\n'), 4) << audit.output;
  std::filesystem::remove_all(dir);
}

// docs/configuration.md is the user's reference: every key the code reads must be in it.
TEST(ConfigurationDocTest, EveryJobConfigKeyIsDocumented) {
  std::ifstream in(std::filesystem::path(COHORT_SOURCE_DIR) / "docs/configuration.md");
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(doc.empty());
  const nlohmann::json config = cohort::core::ToJson(cohort::core::JobConfig());
  for (const auto& [section, keys] : config.items()) {
    EXPECT_NE(doc.find("## `" + section + "`"), std::string::npos) << "section " << section;
    if (!keys.is_object() || section == "model_config") continue;
    for (const auto& [key, value] : keys.items()) {
      EXPECT_NE(doc.find("| `" + key + "` |"), std::string::npos) << section << "." << key << " is not documented";
    }
  }
}

}  // namespace

// The largest difference between two model.pt files of the same layout, read by Python's
// torch; infinity (and a test failure naming the output) when they cannot be compared.
namespace {
double MaxModelDifference(const std::filesystem::path& a, const std::filesystem::path& b) {
  const Result compared = RunCommand(
      "/usr/bin/python3 -c 'import sys, torch\n"
      "a = torch.load(sys.argv[1], weights_only=True); b = torch.load(sys.argv[2], weights_only=True)\n"
      "assert a.keys() == b.keys()\n"
      "print(max((a[k] - b[k]).abs().max().item() for k in a))' " +
      a.string() + " " + b.string());
  EXPECT_EQ(compared.exit_code, 0) << compared.output;
  return compared.exit_code == 0 ? std::stod(compared.output) : std::numeric_limits<double>::infinity();
}
}  // namespace

// Data parallelism at a site, end to end: `cohort run --workers 2` gives each client two
// worker processes over Gloo, each on half of every batch. The site's update must equal one
// process's with the whole batch, so the final model equals the one-worker run's to float
// tolerance (the sums of the all-reduce are only reordered).
TEST(FederationTest, ClientsWithTwoWorkersEachTrainTheSameModelAsOneWorkerClients) {
  const std::filesystem::path dir = TempDir("workers");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "workers";
  job["training_config"]["local_epochs"] = 1;
  job["federation"]["rounds"] = 2;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["data"]["train_subset"] = 2000;
  job["evaluation"]["test_data"] = COHORT_FASHION_MNIST_DIR;
  job["evaluation"]["max_samples"] = 500;
  std::ofstream(dir / "job.json") << job.dump(2);
  for (const char* workers : {"1", "2"}) {
    const Result run = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "job.json").string() +
                                  " --insecure --workers " + workers + " --out " + (dir / workers).string());
    ASSERT_EQ(run.exit_code, 0) << run.output;
    EXPECT_EQ(ReadJson(dir / workers / "summary.json")["status"], "finished") << run.output;
  }
  std::ifstream site_log(dir / "2" / "logs" / "site-0.log");
  const std::string log((std::istreambuf_iterator<char>(site_log)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("worker 0 of 2: data parallel over Gloo on cpu"), std::string::npos) << log;

  if (RunCommand("/usr/bin/python3 -c 'import torch'").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch) to compare model.pt files";
  }
  EXPECT_LT(MaxModelDifference(dir / "1" / "model.pt", dir / "2" / "model.pt"), 1e-5)
      << "the two-worker sites trained a different model";
  std::filesystem::remove_all(dir);
}

// A small decoder on two fortunes categories (one per site), for the LoRA test below.
nlohmann::json SmallLanguageJob(const std::string& name) {
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fortunes_lm.json");
  job["job"]["name"] = name;
  job["model_config"]["hidden_size"] = 32;
  job["model_config"]["intermediate_size"] = 64;
  job["model_config"]["max_position_embeddings"] = 32;
  job["training_config"]["max_steps"] = 30;
  job["training_config"]["warmup_steps"] = 0;
  job["federation"]["rounds"] = 2;
  job["federation"]["clients_per_round"] = 2;
  job["federation"]["min_clients"] = 2;
  job["data"]["files"] = {"computers", "science"};
  job["data"]["sequence_length"] = 32;
  job["evaluation"]["max_samples"] = 200;
  return job;
}

TEST(FederationTest, LoraFineTunesABaseModelAndOnlyTheAdaptersAreTheFederatedModel) {
  if (!std::filesystem::exists("/usr/share/games/fortunes/computers")) {
    GTEST_SKIP() << "the fortunes package is not installed (scripts/setup.sh installs it)";
  }
  const std::filesystem::path dir = TempDir("lora");
  // The base: an ordinary federated language model.
  std::ofstream(dir / "base.json") << SmallLanguageJob("lora-base").dump(2);
  const Result base = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "base.json").string() +
                                 " --insecure --out " + (dir / "base").string());
  ASSERT_EQ(base.exit_code, 0) << base.output;

  // LoRA on it, over mutual TLS: the server fills in the base's digest, each site checks it.
  nlohmann::json lora = SmallLanguageJob("lora-tune");
  lora["model_config"]["lora"] = {{"rank", 4}, {"alpha", 8}, {"targets", {"query", "value", "mlp_in"}},
                                  {"base_model", (dir / "base" / "model.pt").string()}};
  std::ofstream(dir / "lora.json") << lora.dump(2);
  const Result tuned = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "lora.json").string() + " --out " +
                                  (dir / "tuned").string());
  ASSERT_EQ(tuned.exit_code, 0) << tuned.output;
  const nlohmann::json summary = ReadJson(dir / "tuned" / "summary.json");
  EXPECT_EQ(summary["status"], "finished") << tuned.output;
  const Result digest = RunCommand("sha256sum " + (dir / "base" / "model.pt").string());
  ASSERT_EQ(digest.exit_code, 0);
  const std::string sha = digest.output.substr(0, 64);
  EXPECT_EQ(ReadJson(dir / "tuned" / "model.json")["lora"]["base_sha256"], sha);
  std::ifstream site_log(dir / "tuned" / "logs" / "site-1.log");
  const std::string log((std::istreambuf_iterator<char>(site_log)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("LoRA base model " + (dir / "base" / "model.pt").string() + " (SHA-256 " + sha + ") checked"),
            std::string::npos)
      << log;
  ASSERT_EQ(summary["rounds"].size(), 2u);
  EXPECT_TRUE(summary["rounds"][1]["test_accuracy"].is_number());
  EXPECT_TRUE(std::filesystem::exists(dir / "tuned" / "model_merged.pt"));
  EXPECT_LT(std::filesystem::file_size(dir / "tuned" / "model.pt") * 5,
            std::filesystem::file_size(dir / "tuned" / "model_merged.pt"));

  // A config naming another base's digest is refused before anything trains (a site's own
  // copy is checked the same way: tests/training/lora_test.cc).
  nlohmann::json tampered = lora;
  tampered["model_config"]["lora"]["base_sha256"] = std::string(64, '0');
  std::ofstream(dir / "tampered.json") << tampered.dump(2);
  const Result refused = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "tampered.json").string() +
                                    " --insecure --out " + (dir / "refused").string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("has SHA-256 " + sha), std::string::npos) << refused.output;

  // Full fine-tuning of the same base: --initial-model, and a model of another shape refused.
  const Result full = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "base.json").string() +
                                 " --insecure --rounds 1 --initial-model " + (dir / "base" / "model.pt").string() +
                                 " --out " + (dir / "full").string());
  ASSERT_EQ(full.exit_code, 0) << full.output;
  EXPECT_EQ(ReadJson(dir / "full" / "summary.json")["status"], "finished");
  const Result wrong = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "base.json").string() +
                                  " --insecure --rounds 1 --initial-model " + (dir / "tuned" / "model.pt").string() +
                                  " --out " + (dir / "wrong").string());
  EXPECT_NE(wrong.exit_code, 0);

  if (RunCommand("/usr/bin/python3 -c 'import torch'").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch) to read model.pt";
  }
  const Result keys = RunCommand("/usr/bin/python3 -c 'import sys, torch\n"
                                 "a = torch.load(sys.argv[1], weights_only=True)\n"
                                 "m = torch.load(sys.argv[2], weights_only=True)\n"
                                 "b = torch.load(sys.argv[3], weights_only=True)\n"
                                 "assert all(k.endswith((\"lora_A\", \"lora_B\")) for k in a), list(a)\n"
                                 "assert m.keys() == b.keys()\n"
                                 "print(len(a), max((m[k] - b[k]).abs().max().item() for k in m))' " +
                                 (dir / "tuned" / "model.pt").string() + " " +
                                 (dir / "tuned" / "model_merged.pt").string() + " " +
                                 (dir / "base" / "model.pt").string());
  ASSERT_EQ(keys.exit_code, 0) << keys.output;
  std::istringstream numbers(keys.output);
  int adapters = 0;
  double moved = 0;
  numbers >> adapters >> moved;
  EXPECT_EQ(adapters, 2 * 3 * 2);  // 2 blocks x 3 targets x (A, B)
  EXPECT_GT(moved, 1e-4) << "the merged model equals the base: the adapters did not train";
  std::filesystem::remove_all(dir);
}

// Several nodes of one site: two `cohort client` processes started separately (as on two
// machines), node 1 joining node 0's rendezvous by --master over TCP, train the same model as
// one node running both workers. Only node 0 talks to the server.
TEST(FederationTest, ASiteOfTwoNodesTrainsTheSameModelAsOneNodeWithTwoWorkers) {
  const std::filesystem::path dir = TempDir("nodes");
  nlohmann::json job = ReadJson(std::filesystem::path(COHORT_SOURCE_DIR) / "configs/fashion_mnist_cnn_iid.json");
  job["job"]["name"] = "nodes";
  job["training_config"]["local_epochs"] = 1;
  job["federation"]["rounds"] = 2;
  job["federation"]["clients_per_round"] = 1;
  job["federation"]["min_clients"] = 1;
  job["data"]["path"] = COHORT_FASHION_MNIST_DIR;
  job["evaluation"]["test_data"] = "";
  std::ofstream(dir / "job.json") << job.dump();
  const int base_port = 21000 + ::getpid() % 20000;
  auto run_site = [&](const std::string& name, const std::vector<std::vector<std::string>>& node_flags) {
    const std::string port = std::to_string(base_port + (name == "nodes" ? 0 : 2));
    const pid_t server =
        Spawn({"server", "--insecure", "--config", (dir / "job.json").string(), "--listen", "127.0.0.1:" + port,
               "--out", (dir / name).string(), "--state", (dir / (name + "-state")).string()},
              dir / (name + "-server.log"));
    std::vector<pid_t> nodes;
    for (size_t i = 0; i < node_flags.size(); ++i) {
      std::vector<std::string> args = {"client", "--insecure", "--server", "127.0.0.1:" + port, "--site", "site",
                                       "--data", COHORT_FASHION_MNIST_DIR, "--train-subset", "2000",
                                       "--ledger", (dir / (name + "-ledger.jsonl")).string()};
      args.insert(args.end(), node_flags[i].begin(), node_flags[i].end());
      nodes.push_back(Spawn(args, dir / (name + "-node" + std::to_string(i) + ".log")));
    }
    EXPECT_EQ(WaitExit(server, 240), 0) << ReadText(dir / (name + "-server.log"));
    for (size_t i = 0; i < nodes.size(); ++i) {
      EXPECT_EQ(WaitExit(nodes[i], 60), 0) << ReadText(dir / (name + "-node" + std::to_string(i) + ".log"));
    }
  };
  const std::string master = "127.0.0.1:" + std::to_string(base_port + 1);
  run_site("nodes", {{"--nodes", "2", "--node-rank", "0", "--master", master},
                     {"--nodes", "2", "--node-rank", "1", "--master", master}});
  run_site("workers", {{"--workers", "2"}});
  EXPECT_NE(ReadText(dir / "nodes-node0.log").find("(2 node(s) x 1 worker(s))"), std::string::npos)
      << ReadText(dir / "nodes-node0.log");
  EXPECT_EQ(ReadJson(dir / "nodes" / "summary.json")["status"], "finished");

  if (RunCommand("/usr/bin/python3 -c 'import torch'").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch) to compare model.pt files";
  }
  EXPECT_LT(MaxModelDifference(dir / "nodes" / "model.pt", dir / "workers" / "model.pt"), 1e-5)
      << "two nodes trained a different model than two workers on one node";
  std::filesystem::remove_all(dir);
}

// A site that cannot take part (here: its share of the text is empty, because train_subset
// keeps only the first file's windows and by_file gives the second site the other file)
// stops with an error; `cohort run` then stops at once, naming the site and its reason,
// instead of leaving a server waiting for it through every round's timeout.
TEST(FederationTest, ARunStopsAtOnceWhenTooFewSitesAreLeftNamingTheSiteThatFailed) {
  if (!std::filesystem::exists("/usr/share/games/fortunes/computers")) {
    GTEST_SKIP() << "the fortunes package is not installed (scripts/setup.sh installs it)";
  }
  const std::filesystem::path dir = TempDir("site-failed");
  nlohmann::json job = SmallLanguageJob("site-failed");
  job["data"]["train_subset"] = 300;
  std::ofstream(dir / "job.json") << job.dump(2);
  const auto started = std::chrono::steady_clock::now();
  const Result run = RunCommand(std::string(COHORT_BINARY) + " run " + (dir / "job.json").string() +
                                " --insecure --out " + (dir / "out").string());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("site-1 stopped (exit 1)"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("training data is empty"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("the job needs at least 2"), std::string::npos) << run.output;
  EXPECT_LT(seconds, 60) << "the run waited for a site that had stopped";
  std::filesystem::remove_all(dir);
}
