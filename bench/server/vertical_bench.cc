// Vertical jobs end to end in one process: a real server (server::ServeVerticalJob over
// mutual TLS on loopback) and one thread per party running client::RunVerticalParty.
//
//   PSI    two parties of --ids identifiers each (--overlap shared), aligned through the
//          server; beside it, in the same run, the group operations the parties must do
//          (HashAndBlind of their own list and Blind of the other's, both parties at once
//          as in the networked run). Issue target: total <= 1.3x those operations.
//   split  Fashion-MNIST halves (--rows rows, --epochs epochs) trained through the server,
//          against training::TrainSplitInProcess on the same aligned tables and models.
//          Issue target: networked samples/s >= 0.5x in-process.
//
//   cohort_vertical_bench [--ids 100000] [--overlap 0.9] [--rows 6000] [--epochs 1]
//                         [--fmnist /usr/share/datasets/fashion-mnist] [--threads 1] [--skip-split]
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/server/bench_pki.h"
#include "client/vertical_party.h"
#include "core/job_config.h"
#include "crypto/psi.h"
#include "server/server.h"
#include "server/vertical_job.h"
#include "training/model_spec.h"
#include "training/split_in_process.h"
#include "training/trainer.h"
#include "training/vertical_data.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using cohort::client::VerticalPartyStats;

struct Flags {
  int64_t ids = 100000, rows = 6000, epochs = 1;
  double overlap = 0.9;
  std::string fmnist = "/usr/share/datasets/fashion-mnist";
  int threads = 1;
  bool skip_split = false;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

json LoadModel(const std::string& name) {
  std::ifstream in(std::string(COHORT_SOURCE_DIR) + "/configs/models/" + name);
  return json::parse(in);
}

// Runs `job` with a server and one thread per party; returns each party's stats.
std::vector<VerticalPartyStats> RunJob(const json& job, const std::vector<cohort::training::VerticalDataSpec>& data,
                                       const fs::path& dir, int threads) {
  absl::StatusOr<cohort::core::JobConfig> config = cohort::core::ParseJobConfig(job);
  if (!config.ok()) {
    std::fprintf(stderr, "job: %s\n", std::string(config.status().message()).c_str());
    std::exit(1);
  }
  std::vector<std::string> names;
  for (const auto& party : config->vertical.parties) names.push_back(party.name);
  absl::StatusOr<cohort::bench::BenchPki> pki = cohort::bench::BenchPki::Provision(dir / "pki", names);
  if (!pki.ok()) {
    std::fprintf(stderr, "pki: %s\n", std::string(pki.status().message()).c_str());
    std::exit(1);
  }
  cohort::server::VerticalJobOptions options;
  options.config = *config;
  options.out_dir = dir / "server";
  fs::create_directories(options.out_dir);
  absl::StatusOr<std::unique_ptr<cohort::server::VerticalJob>> vjob = cohort::server::VerticalJob::Create(options);
  if (!vjob.ok()) {
    std::fprintf(stderr, "job: %s\n", std::string(vjob.status().message()).c_str());
    std::exit(1);
  }
  std::promise<int> port;
  cohort::server::ServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  server_options.credentials = *pki->ServerCredentials();
  server_options.linger_seconds = 0.5;
  server_options.on_listening = [&](int p) { port.set_value(p); };
  std::thread server([&] { (void)cohort::server::ServeVerticalJob(**vjob, server_options); });
  const std::string address = "127.0.0.1:" + std::to_string(port.get_future().get());
  std::vector<VerticalPartyStats> stats(names.size());
  std::vector<std::thread> parties;
  for (size_t i = 0; i < names.size(); ++i) {
    parties.emplace_back([&, i] {
      cohort::client::VerticalPartyOptions party;
      party.kit_dir = pki->kit_dir(names[i]).string();
      party.server_address = address;
      party.data = data[i];
      party.out_dir = dir / names[i];
      party.threads = threads;
      party.stats = &stats[i];
      if (absl::Status s = cohort::client::RunVerticalParty(party); !s.ok()) {
        std::fprintf(stderr, "party %s: %s\n", names[i].c_str(), std::string(s.message()).c_str());
      }
    });
  }
  for (std::thread& t : parties) t.join();
  server.join();
  return stats;
}

void BenchPsi(const Flags& f, const fs::path& dir) {
  namespace psi = cohort::crypto::psi;
  const int64_t shift = static_cast<int64_t>(static_cast<double>(f.ids) * (1 - f.overlap));
  std::vector<std::vector<std::string>> sets(2);
  for (int party = 0; party < 2; ++party) {
    std::ofstream csv(dir / (party == 0 ? "a.csv" : "b.csv"));
    csv << "id,x" << (party == 0 ? ",y" : "") << "\n";
    for (int64_t i = 0; i < f.ids; ++i) {
      const int64_t id = i + (party == 0 ? 0 : shift);
      sets[static_cast<size_t>(party)].push_back("person-" + std::to_string(id));
      csv << sets[static_cast<size_t>(party)].back() << "," << (id % 10) * 0.1 << (party == 0 ? "," + std::to_string(id % 2) : "")
          << "\n";
    }
  }
  const json bottom = {{"input_shape", {1}}, {"layers", {{{"type", "linear"}, {"out_features", 2}}}}};
  const json top = {{"input_shape", {4}}, {"num_classes", 2}, {"layers", {{{"type", "linear"}, {"out_features", 2}}}}};
  const json job = {{"job", {{"name", "psi-bench"}, {"seed", 1u}}},
                    {"job_type", "vertical"},
                    {"training_config", {{"optimizer", "sgd"}, {"learning_rate", 0.1}, {"batch_size", 4096}}},
                    {"vertical",
                     {{"label_party", "a"},
                      {"epochs", 1},
                      {"eval_fraction", 0.01},
                      {"top_model", top},
                      {"parties", {{{"name", "a"}, {"bottom_model", bottom}}, {{"name", "b"}, {"bottom_model", bottom}}}}}}};
  std::vector<cohort::training::VerticalDataSpec> data(2);
  data[0].path = (dir / "a.csv").string();
  data[0].label_column = "y";
  data[1].path = (dir / "b.csv").string();
  const std::vector<VerticalPartyStats> stats = RunJob(job, data, dir / "psi", f.threads);
  const double networked = std::max(stats[0].psi_seconds, stats[1].psi_seconds);

  // The group operations alone, both parties at once as above.
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int party = 0; party < 2; ++party) {
    workers.emplace_back([&, party] {
      const psi::Scalar key = psi::Scalar::Random();
      const std::vector<psi::Point> own = psi::HashAndBlind("psi-bench", sets[static_cast<size_t>(party)], key, f.threads);
      (void)psi::Blind(own, key, f.threads);  // stands in for the other party's list
    });
  }
  for (std::thread& t : workers) t.join();
  const double group = Seconds(started);
  std::printf("psi: %lld identifiers per party, %lld shared (found %lld): through the server %.3f s, group "
              "operations %.3f s, ratio %.2f (target <= 1.3); sent %.1f MB\n",
              static_cast<long long>(f.ids), static_cast<long long>(f.ids - shift),
              static_cast<long long>(stats[0].intersection_size), networked, group, networked / group,
              static_cast<double>(stats[0].bytes_sent + stats[1].bytes_sent) / 1e6);
}

void BenchSplit(const Flags& f, const fs::path& dir) {
  std::vector<cohort::training::VerticalDataSpec> data(2);
  for (int p = 0; p < 2; ++p) {
    data[static_cast<size_t>(p)].dataset = "fashion-mnist";
    data[static_cast<size_t>(p)].path = f.fmnist;
    data[static_cast<size_t>(p)].column_begin = p == 0 ? 0 : 14;
    data[static_cast<size_t>(p)].column_end = p == 0 ? 14 : 28;
    data[static_cast<size_t>(p)].max_rows = f.rows;
  }
  data[0].label_column = "label";
  const json half = LoadModel("vertical_fmnist_bottom_half.json");
  const json top = LoadModel("vertical_fmnist_top.json");
  const json training = {{"optimizer", "adam"}, {"learning_rate", 0.001}, {"batch_size", 128}, {"threads", f.threads}};
  const json job = {{"job", {{"name", "split-bench"}, {"seed", 1u}}},
                    {"job_type", "vertical"},
                    {"training_config", training},
                    {"vertical",
                     {{"label_party", "left"},
                      {"epochs", f.epochs},
                      {"eval_fraction", 0.1},
                      {"top_model", top},
                      {"parties", {{{"name", "left"}, {"bottom_model", half}}, {{"name", "right"}, {"bottom_model", half}}}}}}};
  const std::vector<VerticalPartyStats> stats = RunJob(job, data, dir / "split", f.threads);
  const double networked = static_cast<double>(stats[0].train_samples) / stats[0].train_seconds;

  std::vector<cohort::training::VerticalTable> tables;
  for (const auto& spec : data) tables.push_back(*cohort::training::ReadVerticalTable(spec));
  tables = cohort::training::IntersectByIdentifier(tables);
  cohort::training::SplitInProcessOptions options;
  options.training = *cohort::core::ParseTrainingConfig(training);
  options.epochs = f.epochs;
  options.eval_fraction = 0.1;
  options.seed = 1;
  cohort::training::SetTrainingThreads(f.threads);
  absl::StatusOr<cohort::training::SplitInProcessResult> in_process = cohort::training::TrainSplitInProcess(
      tables, 0, {*cohort::training::ParseModelSpec(half), *cohort::training::ParseModelSpec(half)},
      *cohort::training::ParseModelSpec(top), options);
  if (!in_process.ok()) {
    std::fprintf(stderr, "in process: %s\n", std::string(in_process.status().message()).c_str());
    std::exit(1);
  }
  const double local = static_cast<double>(in_process->train_rows * f.epochs) / in_process->train_seconds;
  std::printf("split: fashion-mnist halves, %lld rows, %lld epochs: through the server %.0f samples/s (eval accuracy "
              "%.4f), in one process %.0f samples/s (eval accuracy %.4f), ratio %.2f (target >= 0.5)\n",
              static_cast<long long>(f.rows), static_cast<long long>(f.epochs), networked, stats[0].eval_accuracy,
              local, in_process->eval_accuracy, networked / local);
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (arg == "--ids") f.ids = std::stoll(next());
    else if (arg == "--overlap") f.overlap = std::stod(next());
    else if (arg == "--rows") f.rows = std::stoll(next());
    else if (arg == "--epochs") f.epochs = std::stoll(next());
    else if (arg == "--fmnist") f.fmnist = next();
    else if (arg == "--threads") f.threads = std::stoi(next());
    else if (arg == "--skip-split") f.skip_split = true;
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of vertical_bench.cc)\n", arg.c_str());
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  char templ[] = "/tmp/cohort-vertical-bench-XXXXXX";
  const fs::path dir = ::mkdtemp(templ);
  BenchPsi(f, dir);
  if (!f.skip_split) BenchSplit(f, dir);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
