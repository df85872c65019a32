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

struct RunFlags {
  std::string job_file, out = "runs/latest", partition;
  bool insecure = false;
  int clients = 0, rounds = 0, port = 0;
  int64_t seed = -1;
  int64_t train_subset = -1;
};

std::vector<pid_t> g_children;

void KillChildren(int) {
  for (pid_t pid : g_children) ::kill(pid, SIGTERM);
  std::_Exit(130);
}

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// Starts `cohort ARGS...` with stdout and stderr going to `log`.
pid_t Spawn(const std::vector<std::string>& args, const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
  }
  std::vector<char*> argv;
  static std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  argv.push_back(self.data());
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(self.c_str(), argv.data());
  std::perror("exec cohort");
  std::_Exit(127);
}

// One progress line per change of round state; one summary line per finished round.
class ProgressPrinter {
 public:
  ProgressPrinter(std::shared_ptr<grpc::Channel> channel, int total_rounds)
      : stub_(v1::Admin::NewStub(channel)), total_rounds_(total_rounds) {}

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
    for (const auto& r : summary["rounds"]) {
      const uint64_t round = r["round"].get<uint64_t>();
      if (round <= printed_rounds_) continue;
      printed_rounds_ = round;
      std::string test;
      if (r.contains("test_accuracy")) {
        test = absl::StrFormat("  test loss %.4f  test accuracy %5.2f%%", Metric(r, "test_loss"),
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
  uint64_t printed_rounds_ = 0;
  std::string last_line_;
};

int RunVerticalFederation(const RunFlags& f, nlohmann::json job);

int RunFederation(const RunFlags& f) {
  if (absl::StatusOr<nlohmann::json> raw = core::ReadBoundedJsonFile(f.job_file, core::kJobConfigJson, "job config");
      raw.ok() && raw->is_object() && raw->value("job_type", "") == "vertical") {
    return RunVerticalFederation(f, std::move(*raw));
  }
  // Command-line overrides, then the same validation the server will apply.
  absl::StatusOr<LoadedJob> base = LoadJob(f.job_file);
  if (!base.ok()) {
    spdlog::error("{}", std::string(base.status().message()));
    return 2;
  }
  core::JobConfig config = base->config;
  if (f.rounds > 0) config.federation.rounds = f.rounds;
  if (f.clients > 0) {
    config.federation.clients_per_round = f.clients;
    config.federation.min_clients = std::min<int64_t>(config.federation.min_clients, f.clients);
  }
  if (!f.partition.empty()) config.data.partition = f.partition;
  if (f.seed >= 0) config.seed = static_cast<uint64_t>(f.seed);
  if (f.train_subset >= 0) config.data.train_subset = f.train_subset;
  const nlohmann::json effective = core::ToJson(config);
  absl::StatusOr<LoadedJob> checked = CheckJob(effective, "command line");
  if (!checked.ok()) {
    spdlog::error("{}", std::string(checked.status().message()));
    return 2;
  }
  const int clients = static_cast<int>(config.federation.clients_per_round);

  const std::filesystem::path out = f.out;
  std::error_code ec;
  std::filesystem::create_directories(out / "logs", ec);
  if (ec) {
    spdlog::error("--out {}: {}", out.string(), ec.message());
    return 2;
  }
  const std::filesystem::path job_path = out / "job.json";
  if (absl::Status s = storage::WriteFileAtomically(job_path, effective.dump(2) + "\n"); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  const int port = f.port > 0 ? f.port : FreeLoopbackPort();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  std::printf("cohort run: job %s, %d clients, %lld rounds, partition %s, seed %llu\n", config.name.c_str(), clients,
              static_cast<long long>(config.federation.rounds), config.data.partition.c_str(),
              static_cast<unsigned long long>(config.seed));
  std::printf("  server on %s; logs in %s\n", address.c_str(), (out / "logs").c_str());
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
  // The server evaluates while clients wait for the next round: give it both cores.
  // The server's state (ledger anchors, checkpoint key) stays with this run's outputs.
  const pid_t server = Spawn(with_security({"server", "--config", job_path.string(), "--listen", address, "--out",
                                            out.string(), "--threads", "2", "--state", (out / "server-state").string()},
                                           "server"),
                             out / "logs" / "server.log");
  g_children.push_back(server);
  for (int i = 0; i < clients; ++i) {
    const std::string site = absl::StrCat("site-", i);
    g_children.push_back(Spawn(with_security({"client", "--server", address, "--site", site, "--data", config.data.path,
                                              "--dataset", config.data.dataset, "--label-column",
                                              config.data.label_column, "--shard", absl::StrCat(i, "/", clients),
                                              "--partition", config.data.partition, "--seed",
                                              absl::StrCat(config.seed), "--eval-fraction",
                                              absl::StrCat(config.data.eval_fraction), "--train-subset",
                                              absl::StrCat(config.data.train_subset), "--connect-timeout", "60", "--ledger",
                                              (out / "sites" / site / "privacy-ledger.jsonl").string()},
                                             site),
                               out / "logs" / absl::StrCat(site, ".log")));
  }

  ProgressPrinter progress(grpc::CreateChannel(address, operator_credentials),
                           static_cast<int>(config.federation.rounds));
  const auto started = std::chrono::steady_clock::now();
  int server_status = 0;
  for (;;) {
    const pid_t done = ::waitpid(server, &server_status, WNOHANG);
    if (done == server) break;
    progress.Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  // Rounds that finished between the last poll and the server's exit.
  progress.PrintRounds(core::ReadBoundedJsonFile(out / "summary.json", core::kCheckpointHeaderJson, "summary")
                           .value_or(nlohmann::json()));
  // Clients learn the job is done on their next poll; give them a moment, then stop them.
  for (size_t i = 1; i < g_children.size(); ++i) {
    int status = 0;
    for (int waited = 0; waited < 100 && ::waitpid(g_children[i], &status, WNOHANG) == 0; ++waited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(g_children[i], SIGTERM);
    ::waitpid(g_children[i], &status, 0);
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

// ---- Vertical jobs: one server and one party process per vertical.parties[i] ----

// A party's data spec from the job, its relative path made absolute: read from the current
// directory when it exists there, else from the job file's directory or its parent (the
// repository root for the files under configs/).
absl::StatusOr<training::VerticalDataSpec> PartyData(const core::VerticalParty& party,
                                                     const std::filesystem::path& job_file) {
  const std::string key = absl::StrCat("vertical.parties[\"", party.name, "\"].data");
  if (!party.data.is_object() || party.data.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": missing; cohort run needs each party's data spec (training/vertical_data.h)"));
  }
  absl::StatusOr<training::VerticalDataSpec> spec = training::ParseVerticalDataSpec(party.data);
  if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat(key, ": ", spec.status().message()));
  std::filesystem::path path = spec->path;
  if (path.is_relative()) {
    const std::filesystem::path dir = std::filesystem::absolute(job_file).parent_path();
    for (const std::filesystem::path& base : {std::filesystem::current_path(), dir, dir.parent_path()}) {
      if (std::filesystem::exists(base / path)) {
        path = base / path;
        break;
      }
    }
    path = std::filesystem::absolute(path);
  }
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat(key, ".path: ", spec->path,
                                            " does not exist (for the breast cancer examples run "
                                            "scripts/make_vertical_data.sh)"));
  }
  spec->path = path.string();
  return spec;
}

// The message of the last error line of a process's log (spdlog's "[...] [error] text").
std::string LastError(const std::filesystem::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    const size_t at = line.find("[error] ");
    if (at != std::string::npos) last = line.substr(at + 8);
  }
  return last;
}

// Follows a party's log and returns its progress lines (PSI, epochs) as they appear.
class LogFollower {
 public:
  explicit LogFollower(std::filesystem::path path) : path_(std::move(path)) {}
  std::vector<std::string> NewProgressLines() {
    std::vector<std::string> lines;
    std::ifstream in(path_);
    if (!in) return lines;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a line still being written: read it whole next time
      offset_ += line.size() + 1;
      const size_t at = line.find("party=");
      if (at == std::string::npos) continue;
      if (line.find(" psi: ") != std::string::npos || line.find(" epoch ") != std::string::npos) {
        lines.push_back(line.substr(at));
      }
    }
    return lines;
  }

 private:
  std::filesystem::path path_;
  size_t offset_ = 0;
};

int RunVerticalFederation(const RunFlags& f, nlohmann::json job) {
  if (f.seed >= 0) {
    if (!job.contains("job") || !job["job"].is_object()) job["job"] = nlohmann::json::object();
    job["job"]["seed"] = f.seed;
  }
  absl::StatusOr<core::JobConfig> parsed = core::ParseJobConfig(job);
  if (!parsed.ok()) {
    spdlog::error("{}: {}", f.job_file, std::string(parsed.status().message()));
    return 2;
  }
  const core::JobConfig& config = *parsed;
  const core::VerticalConfig& vertical = config.vertical;
  if (f.insecure) {
    spdlog::error("--insecure: a vertical job needs startup kits (each party signs its introduction with its kit)");
    return 2;
  }
  std::vector<training::VerticalDataSpec> data;
  for (const core::VerticalParty& party : vertical.parties) {
    if (absl::StatusOr<training::ModelSpec> m = training::ParseModelSpec(party.bottom_model); !m.ok()) {
      spdlog::error("{}: vertical.parties[\"{}\"].bottom_model: {}", f.job_file, party.name,
                    std::string(m.status().message()));
      return 2;
    }
    absl::StatusOr<training::VerticalDataSpec> spec = PartyData(party, f.job_file);
    if (!spec.ok()) {
      spdlog::error("{}: {}", f.job_file, std::string(spec.status().message()));
      return 2;
    }
    data.push_back(std::move(*spec));
  }
  if (absl::StatusOr<training::ModelSpec> m = training::ParseModelSpec(vertical.top_model); !m.ok()) {
    spdlog::error("{}: vertical.top_model: {}", f.job_file, std::string(m.status().message()));
    return 2;
  }

  const std::filesystem::path out = std::filesystem::absolute(f.out);
  std::error_code ec;
  std::filesystem::create_directories(out / "logs", ec);
  if (ec) {
    spdlog::error("--out {}: {}", out.string(), ec.message());
    return 2;
  }
  const std::filesystem::path job_path = out / "job.json";
  if (absl::Status s = storage::WriteFileAtomically(job_path, job.dump(2) + "\n"); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  const int port = f.port > 0 ? f.port : FreeLoopbackPort();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  std::vector<std::string> names;
  for (const core::VerticalParty& party : vertical.parties) names.push_back(party.name);
  std::printf("cohort run: vertical job %s, parties %s (labels at %s), %lld epochs, seed %llu\n", config.name.c_str(),
              absl::StrJoin(names, ", ").c_str(), vertical.label_party.c_str(),
              static_cast<long long>(vertical.epochs), static_cast<unsigned long long>(config.seed));
  std::printf("  server on %s; logs in %s\n", address.c_str(), (out / "logs").c_str());

  // A throwaway federation: a CA, the server's kit, one site kit per party, an operator
  // and an auditor kit, all under OUT/pki.
  const std::filesystem::path pki = out / "pki";
  std::filesystem::remove_all(pki, ec);
  crypto::FederationSpec spec;
  spec.federation = config.name;
  spec.server_host = "127.0.0.1";
  spec.server_port = static_cast<uint16_t>(port);
  for (const std::string& name : names) spec.participants.push_back({name, crypto::Role::kSite});
  spec.participants.push_back({"operator", crypto::Role::kAdmin});
  spec.participants.push_back({"auditor", crypto::Role::kAuditor});
  if (absl::StatusOr<std::vector<crypto::ProvisionedKit>> kits = crypto::ProvisionFederation(spec, pki); !kits.ok()) {
    spdlog::error("provisioning the local federation in {}: {}", pki.string(), std::string(kits.status().message()));
    return 1;
  }
  std::printf("  mutual TLS: CA and startup kits in %s\n", pki.c_str());
  std::fflush(stdout);

  std::signal(SIGINT, KillChildren);
  std::signal(SIGTERM, KillChildren);
  const pid_t server = Spawn({"server", "--config", job_path.string(), "--listen", address, "--out", out.string(),
                              "--kit", (pki / "server").string()},
                             out / "logs" / "server.log");
  g_children.push_back(server);
  struct PartyProcess {
    std::string name;
    pid_t pid = 0;
    bool exited = false;
    std::unique_ptr<LogFollower> log;
  };
  std::vector<PartyProcess> parties;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::filesystem::path dir = out / "parties" / names[i];
    std::filesystem::create_directories(dir, ec);
    const std::filesystem::path data_path = dir / "data.json";
    if (absl::Status s =
            storage::WriteFileAtomically(data_path, training::VerticalDataSpecToJson(data[i]).dump(2) + "\n");
        !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      KillChildren(0);
    }
    const std::filesystem::path log = out / "logs" / absl::StrCat(names[i], ".log");
    const pid_t pid = Spawn({"client", "--kit", (pki / names[i]).string(), "--vertical-data", data_path.string(),
                             "--out", dir.string(), "--connect-timeout", "60"},
                            log);
    g_children.push_back(pid);
    // For whoever wants to stop one party (a test of the party timeout).
    (void)storage::WriteFileAtomically(out / "logs" / absl::StrCat(names[i], ".pid"), absl::StrCat(pid, "\n"));
    parties.push_back({names[i], pid, false, std::make_unique<LogFollower>(log)});
  }

  const auto started = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> give_up;
  auto print_progress = [&] {
    for (PartyProcess& p : parties) {
      for (const std::string& line : p.log->NewProgressLines()) std::printf("  %s\n", line.c_str());
    }
    std::fflush(stdout);
  };
  int server_status = 0;
  for (;;) {
    if (::waitpid(server, &server_status, WNOHANG) == server) break;
    for (PartyProcess& p : parties) {
      int status = 0;
      if (p.exited || ::waitpid(p.pid, &status, WNOHANG) != p.pid) continue;
      p.exited = true;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
      const std::string why = LastError(out / "logs" / absl::StrCat(p.name, ".log"));
      std::printf("  party %s stopped (%s)%s%s\n", p.name.c_str(),
                  WIFSIGNALED(status) ? absl::StrCat("signal ", WTERMSIG(status)).c_str()
                                      : absl::StrCat("exit ", WEXITSTATUS(status)).c_str(),
                  why.empty() ? "" : ": ", why.c_str());
      std::fflush(stdout);
      // The server fails the job when the party stays away past its timeout.
      if (!give_up) {
        give_up = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(vertical.party_timeout_s * 1000) + 15000);
      }
    }
    print_progress();
    if (give_up && std::chrono::steady_clock::now() > *give_up) {
      ::kill(server, SIGTERM);
      ::waitpid(server, &server_status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  for (PartyProcess& p : parties) {
    int status = 0;
    for (int waited = 0; !p.exited && waited < 100 && ::waitpid(p.pid, &status, WNOHANG) == 0; ++waited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!p.exited) {
      ::kill(p.pid, SIGTERM);
      ::waitpid(p.pid, &status, 0);
    }
  }
  print_progress();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const bool ok = WIFEXITED(server_status) && WEXITSTATUS(server_status) == 0;
  if (ok) {
    std::printf("finished in %.1f s. Outputs: %s/summary.json, %s/parties/NAME/{model.pt,party.json} (%s: top.pt)\n",
                seconds, out.c_str(), out.c_str(), vertical.label_party.c_str());
  } else {
    // The job's reason as the server recorded it; else the server's last error.
    const nlohmann::json summary = core::ReadBoundedJsonFile(out / "summary.json", core::kCheckpointHeaderJson, "summary")
                                       .value_or(nlohmann::json());
    const std::string why = summary.is_object() && summary.contains("reason") && summary["reason"].is_string()
                                ? summary["reason"].get<std::string>()
                                : LastError(out / "logs" / "server.log");
    std::printf("FAILED in %.1f s%s%s\n  see %s\n", seconds, why.empty() ? "" : ": ", why.c_str(),
                (out / "logs").c_str());
  }
  std::printf("Audit log: %s (verify: cohort audit verify %s --key %s)\n", (out / "audit.log").c_str(),
              (out / "audit.log").c_str(), (out / "audit" / "audit.pub").c_str());
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
  cmd->add_option("--port", f->port, "Server port on 127.0.0.1 (default: a free one)");
  cmd->add_option("--out", f->out, "Output directory")->capture_default_str();
  cmd->add_flag("--insecure", f->insecure, "Plaintext gRPC without certificates (default: a throwaway mTLS federation)");
  cmd->callback([f, exit_code] { *exit_code = RunFederation(*f); });
}

}  // namespace cohort::cli
