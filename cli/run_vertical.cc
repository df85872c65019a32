// `cohort run` on a vertical job: one server and one party process per vertical.parties[i].
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
#include "cli/run_support.h"

namespace cohort::cli {
namespace {
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

}  // namespace

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
  if (const int code = PrepareRunDirectory(out, job); code != 0) return code;
  std::error_code ec;
  const std::filesystem::path job_path = out / "job.json";
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
  Children().push_back(server);
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
    Children().push_back(pid);
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
}  // namespace cohort::cli
