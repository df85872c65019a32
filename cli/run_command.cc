// `cohort run`: a whole federation on this machine. Starts one server and K clients as
// separate processes on loopback, shows live progress, and leaves everything in --out.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/job_loading.h"
#include "cli/run_support.h"
#include "core/bounded_json.h"
#include "crypto/provisioning.h"
#include "crypto/startup_kit.h"
#include "storage/atomic_write.h"
#include "training/model_spec.h"
#include "training/vertical_data.h"
#include "wire/credentials.h"
#include "proto/cohort.grpc.pb.h"

namespace cohort::cli {
namespace {


// One progress line per change of round state; one summary line per finished round.
class ProgressPrinter {
 public:
  // `language_model`: the test loss is per token, so its perplexity is shown beside it.
  // `evaluated`: the server tests each round's model (a round's line waits for it).
  ProgressPrinter(std::shared_ptr<grpc::Channel> channel, int total_rounds, bool language_model, bool evaluated)
      : stub_(v1::Admin::NewStub(channel)),
        total_rounds_(total_rounds),
        language_model_(language_model),
        evaluated_(evaluated) {}

  void Poll() {
    grpc::ClientContext context;
    // Wait for the server to come up rather than fail fast while the channel backs off.
    context.set_wait_for_ready(true);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    v1::StatusReply reply;
    if (!stub_->GetStatus(&context, v1::StatusRequest(), &reply).ok()) return;
    PrintRounds(core::ParseBoundedJson(reply.summary_json(), core::kCheckpointHeaderJson, "summary")
                    .value_or(nlohmann::json()));
    int training = 0, reported = 0, lost = 0;
    for (const auto& c : reply.clients()) {
      training += c.state() == "training";
      reported += c.state() == "reported";
      lost += c.state() == "lost";
    }
    const std::string line = absl::StrCat("  ... round ", reply.round(), "/", reply.total_rounds(), " ", reply.state(),
                                          ": ", reported, " reported, ", training, " training",
                                          lost ? absl::StrCat(", ", lost, " lost") : "", ", ", reply.clients_size(),
                                          " joined");
    if (line != last_line_ && reply.state() == "running" && reply.round() > printed_rounds_) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      last_line_ = line;
    }
  }

  // A loss or accuracy from summary.json; JSON has no NaN, so a diverged round's loss
  // arrives as null and is shown as nan.
  static double Metric(const nlohmann::json& round, const char* key) {
    const auto it = round.find(key);
    return it != round.end() && it->is_number() ? it->get<double>() : std::numeric_limits<double>::quiet_NaN();
  }

  // Prints the rounds of `summary` not printed yet (from a status reply or summary.json).
  void PrintRounds(const nlohmann::json& summary) {
    if (!summary.is_object() || !summary.contains("rounds")) return;
    const bool finished = summary.value("status", "running") != "running";
    for (const auto& r : summary["rounds"]) {
      const uint64_t round = r["round"].get<uint64_t>();
      if (round <= printed_rounds_) continue;
      // The server tests a round's model while the next round trains: its line waits
      // for the test metrics (summary.json at the end has them all).
      if (evaluated_ && !r.contains("test_accuracy") && !finished) break;
      printed_rounds_ = round;
      std::string test;
      if (r.contains("test_accuracy")) {
        const std::string perplexity =
            language_model_ ? absl::StrFormat(" (perplexity %.2f)", Metric(r, "test_perplexity")) : "";
        test = absl::StrFormat("  test loss %.4f%s  test accuracy %5.2f%%", Metric(r, "test_loss"), perplexity,
                               100 * Metric(r, "test_accuracy"));
      }
      std::printf("round %3llu/%d  clients %zu  train loss %.4f%s  %5.1f s\n", static_cast<unsigned long long>(round),
                  total_rounds_, r["clients_reported"].get<size_t>(), Metric(r, "train_loss"), test.c_str(),
                  Metric(r, "wall_seconds"));
      std::fflush(stdout);
    }
  }

 private:
  std::unique_ptr<v1::Admin::Stub> stub_;
  int total_rounds_;
  bool language_model_;
  bool evaluated_;
  uint64_t printed_rounds_ = 0;
  std::string last_line_;
};


int RunFederation(const RunFlags& f) {
  absl::StatusOr<nlohmann::json> raw = core::ReadBoundedJsonFile(f.job_file, core::kJobConfigJson, "job config");
  if (!raw.ok()) {
    spdlog::error("{}", std::string(raw.status().message()));
    return 2;
  }
  if (raw->is_object() && raw->value("job_type", "") == "vertical") return RunVerticalFederation(f, std::move(*raw));
  // Command-line overrides on the parsed config, then the server's validation once (CheckJob
  // below: it also reads and hashes a LoRA base model, which need not happen twice).
  absl::StatusOr<core::JobConfig> parsed = core::ParseJobConfig(*raw);
  if (!parsed.ok()) {
    spdlog::error("{}: {}", f.job_file, std::string(parsed.status().message()));
    return 2;
  }
  core::JobConfig config = std::move(*parsed);
  if (f.workers < 1 || f.workers > 64) {
    spdlog::error("--workers: expected 1 to 64 worker processes per client, got {}", f.workers);
    return 2;
  }
  if (f.rounds > 0) config.federation.rounds = f.rounds;
  if (f.clients > 0) {
    config.federation.clients_per_round = f.clients;
    config.federation.min_clients = std::min<int64_t>(config.federation.min_clients, f.clients);
  }
  if (!f.partition.empty()) config.data.partition = f.partition;
  if (f.seed >= 0) config.seed = static_cast<uint64_t>(f.seed);
  if (f.train_subset >= 0) config.data.train_subset = f.train_subset;
  const nlohmann::json effective = core::ToJson(config);
  absl::StatusOr<LoadedJob> checked = CheckJob(effective, f.job_file);
  if (!checked.ok()) {
    spdlog::error("{}", std::string(checked.status().message()));
    return 2;
  }
  const int clients = static_cast<int>(config.federation.clients_per_round);

  const std::filesystem::path out = f.out;
  if (const int code = PrepareRunDirectory(out, effective); code != 0) return code;
  std::error_code ec;
  const std::filesystem::path job_path = out / "job.json";
  const int port = f.port > 0 ? f.port : FreeLoopbackPort();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  std::printf("cohort run: job %s, %d clients, %lld rounds, partition %s, seed %llu\n", config.name.c_str(), clients,
              static_cast<long long>(config.federation.rounds), config.data.partition.c_str(),
              static_cast<unsigned long long>(config.seed));
  std::printf("  server on %s; logs in %s\n", address.c_str(), (out / "logs").c_str());
  // The server's read-only dashboard and Prometheus /metrics (docs/operability.md).
  const std::string dashboard = absl::StrCat("127.0.0.1:", FreeLoopbackPort(/*other_than=*/port));
  std::printf("  dashboard: http://%s/  (Prometheus: http://%s/metrics)\n", dashboard.c_str(), dashboard.c_str());
  std::fflush(stdout);

  // A throwaway federation: a CA, the server's kit, one kit per site, an operator (admin)
  // kit for the progress display and `cohort admin`, and an auditor kit, all under OUT/pki.
  const std::filesystem::path pki = out / "pki";
  std::shared_ptr<grpc::ChannelCredentials> operator_credentials = grpc::InsecureChannelCredentials();
  if (!f.insecure) {
    std::filesystem::remove_all(pki, ec);
    crypto::FederationSpec spec;
    spec.federation = config.name;
    spec.server_host = "127.0.0.1";
    spec.server_port = static_cast<uint16_t>(port);
    for (int i = 0; i < clients; ++i) spec.participants.push_back({absl::StrCat("site-", i), crypto::Role::kSite});
    spec.participants.push_back({"operator", crypto::Role::kAdmin});
    spec.participants.push_back({"auditor", crypto::Role::kAuditor});
    absl::StatusOr<std::vector<crypto::ProvisionedKit>> kits = crypto::ProvisionFederation(spec, pki);
    if (!kits.ok()) {
      spdlog::error("provisioning the local federation in {}: {}", pki.string(), std::string(kits.status().message()));
      return 1;
    }
    absl::StatusOr<crypto::StartupKit> operator_kit = crypto::LoadStartupKit(pki / "operator");
    if (!operator_kit.ok()) {
      spdlog::error("{}", std::string(operator_kit.status().message()));
      return 1;
    }
    operator_credentials = wire::ChannelCredentialsFromKit(*operator_kit);
    std::printf("  mutual TLS: CA and startup kits in %s\n", pki.c_str());
  } else {
    std::printf("  INSECURE: plaintext gRPC without certificates\n");
  }
  std::fflush(stdout);
  auto with_security = [&](std::vector<std::string> args, const std::string& kit) {
    if (f.insecure) {
      args.push_back("--insecure");
    } else {
      args.push_back("--kit");
      args.push_back((pki / kit).string());
    }
    return args;
  };

  std::signal(SIGINT, KillChildren);
  std::signal(SIGTERM, KillChildren);
  // The server evaluates each round's model while the sites train the next one: one
  // thread, since more would only contend with the sites for these cores (an idle
  // OpenMP worker spins, taking CPU from them). The server's state (ledger anchors, checkpoint key) stays with this run's outputs.
  std::vector<std::string> server_args = {"server",  "--config", job_path.string(), "--listen", address, "--out",
                                         out.string(), "--threads", "1", "--state", (out / "server-state").string(),
                                         "--metrics-listen", dashboard};
  if (!f.tensorboard.empty()) server_args.insert(server_args.end(), {"--tensorboard", f.tensorboard});
  if (!f.initial_model.empty()) server_args.insert(server_args.end(), {"--initial-model", f.initial_model});
  const pid_t server = Spawn(with_security(server_args, "server"), out / "logs" / "server.log");
  Children().push_back(server);
  for (int i = 0; i < clients; ++i) {
    const std::string site = absl::StrCat("site-", i);
    Children().push_back(Spawn(with_security({"client", "--server", address, "--site", site, "--data", config.data.path,
                                              "--dataset", config.data.dataset, "--label-column",
                                              config.data.label_column, "--shard", absl::StrCat(i, "/", clients),
                                              "--partition", config.data.partition, "--seed",
                                              absl::StrCat(config.seed), "--eval-fraction",
                                              absl::StrCat(config.data.eval_fraction), "--train-subset",
                                              absl::StrCat(config.data.train_subset), "--connect-timeout", "60", "--ledger",
                                              (out / "sites" / site / "privacy-ledger.jsonl").string(), "--workers",
                                              absl::StrCat(f.workers), "--sequence-length",
                                              absl::StrCat(config.data.sequence_length), "--files",
                                              absl::StrJoin(config.data.files, ",")},
                                             site),
                               out / "logs" / absl::StrCat(site, ".log")));
  }

  ProgressPrinter progress(grpc::CreateChannel(address, operator_credentials),
                           static_cast<int>(config.federation.rounds), checked->model.predicts_every_position(),
                           !config.evaluation.test_data.empty());
  const auto started = std::chrono::steady_clock::now();
  int server_status = 0;
  // A site that fails for good (bad data, a refused base model, a crash) leaves a server that
  // would wait for it until its round timeouts run out, again and again: once fewer sites are
  // left than the job's minimum, stop everything and say which site failed and why.
  std::vector<bool> site_failed(static_cast<size_t>(clients), false);
  int failed_sites = 0;
  for (;;) {
    const pid_t done = ::waitpid(server, &server_status, WNOHANG);
    if (done == server) break;
    for (int i = 0; i < clients; ++i) {
      int status = 0;
      if (site_failed[static_cast<size_t>(i)] ||
          ::waitpid(Children()[static_cast<size_t>(i) + 1], &status, WNOHANG) <= 0 ||
          (WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        continue;
      }
      site_failed[static_cast<size_t>(i)] = true;
      ++failed_sites;
      const std::filesystem::path log = out / "logs" / absl::StrCat("site-", i, ".log");
      std::printf("site-%d stopped (%s): %s\n", i,
                  WIFEXITED(status) ? absl::StrCat("exit ", WEXITSTATUS(status)).c_str()
                                    : absl::StrCat("signal ", WTERMSIG(status)).c_str(),
                  LastErrorLine(log).c_str());
    }
    if (clients - failed_sites < config.federation.min_clients) {
      std::printf("FAILED: %d of %d sites stopped and the job needs at least %lld; stopping the server. Logs: %s\n",
                  failed_sites, clients, static_cast<long long>(config.federation.min_clients),
                  (out / "logs").c_str());
      StopChildren();
      return 1;
    }
    progress.Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  // Rounds that finished between the last poll and the server's exit.
  progress.PrintRounds(core::ReadBoundedJsonFile(out / "summary.json", core::kCheckpointHeaderJson, "summary")
                           .value_or(nlohmann::json()));
  // Clients learn the job is done on their next poll; give them a moment, then stop them.
  for (size_t i = 1; i < Children().size(); ++i) {
    int status = 0;
    for (int waited = 0; waited < 100 && ::waitpid(Children()[i], &status, WNOHANG) == 0; ++waited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(Children()[i], SIGTERM);
    ::waitpid(Children()[i], &status, 0);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const bool ok = WIFEXITED(server_status) && WEXITSTATUS(server_status) == 0;
  std::printf("%s in %.1f s. Outputs: %s/{model.pt,model.json,summary.json}\n", ok ? "finished" : "FAILED", seconds,
              out.c_str());
  std::printf("Audit log: %s (verify: cohort audit verify %s --key %s)\n", (out / "audit.log").c_str(),
              (out / "audit.log").c_str(), (out / "audit" / "audit.pub").c_str());
  if (!ok) std::printf("  see %s for the reason\n", (out / "logs" / "server.log").c_str());
  return ok ? 0 : 1;
}


}  // namespace

void AddRunCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("run", "Run a whole federation locally: one server and K clients as processes "
                                         "(a vertical job: one server and one process per party)");
  auto f = std::make_shared<RunFlags>();
  cmd->add_option("job", f->job_file, "Job config (JSON)")->required();
  cmd->add_option("--clients", f->clients, "Number of clients (default: federation.clients_per_round)");
  cmd->add_option("--rounds", f->rounds, "Rounds (default: federation.rounds)");
  cmd->add_option("--partition", f->partition, "iid | dirichlet:ALPHA (default: data.partition)");
  cmd->add_option("--seed", f->seed, "Seed (default: job.seed)");
  cmd->add_option("--train-subset", f->train_subset, "Use only the first N training rows (default: data.train_subset)");
  cmd->add_option("--workers", f->workers, "Worker processes per client (cohort client --workers)")
      ->capture_default_str();
  cmd->add_option("--port", f->port, "Server port on 127.0.0.1 (default: a free one)");
  cmd->add_option("--out", f->out, "Output directory")->capture_default_str();
  cmd->add_option("--initial-model", f->initial_model,
                  "The server starts from these weights (a state_dict, e.g. an earlier run's model.pt): fine-tuning");
  cmd->add_option("--tensorboard", f->tensorboard, "The server writes each round's scalars as TensorBoard events here");
  cmd->add_flag("--insecure", f->insecure, "Plaintext gRPC without certificates (default: a throwaway mTLS federation)");
  cmd->callback([f, exit_code] { *exit_code = RunFederation(*f); });
}

}  // namespace cohort::cli
