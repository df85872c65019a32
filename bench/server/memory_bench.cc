// Peak memory of the aggregation server as the number of clients grows.
//
// For each N (4 and 32 by default) and each repeat, a fresh server process runs one real
// round: a server::FederatedJob over a 25M-parameter model (100 MB of float32, 4 tensors)
// behind server::ServeJob on 127.0.0.1:0, with clients_per_round = min_clients = N. The N
// clients are threads of a second process (forked before the server starts, so nothing of
// theirs lands in the server's address space): each joins, pulls its task (downloading the
// global model and dropping it after the checks), waits until all N hold the model (as if
// they trained for the same time), then all N push a 100 MB update at once, exactly as
// client/agent.cc does. The server spools every update to disk (UpdateReceiver), folds
// them with StreamingFedAvg, applies the result, and writes its checkpoint; then it exits.
//
// Reported for the server process, from /proc/self/status:
//   start       VmHWM when the process begins (the binary and its libraries)
//   with model  VmHWM once the initial model and the job exist
//   downloads   VmHWM when all N clients hold the global model, before any upload
//   uploads     the highest VmRSS seen (sampled every 20 ms) from then until all N updates
//               are accepted
//   peak        VmHWM at the end: the whole run, closing the round included
// The figure that matters is peak(N=32) - peak(N=4): what 28 more clients cost.
//
// --tls runs the same over mutual TLS (a throwaway federation with one site kit per client,
// bench/server/bench_pki.h), as a provisioned deployment runs; the default is plaintext.
//
// --grpc=TUNING swaps server::ServeJob for an equivalent server with one gRPC setting
// changed (bench/server/tuned_server.h: bdp, no-bdp, window=MiB, quota=MB), to show where the
// per-client memory goes and what a setting would save.
//
// --chunk-kib=N sets the job's federation.chunk_bytes (default: a job's default, 512 KiB).
//
// Usage: cohort_memory_bench [--clients=4,32] [--repeats=3] [--params=25000000] [--chunk-kib=512] [--grpc=TUNING] [--tls]

#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/server/bench_pki.h"
#include "bench/server/bench_support.h"
#include "bench/server/tuned_server.h"
#include "server/federated_job.h"
#include "server/server.h"
#include "wire/federation_client.h"

namespace cohort::bench {
namespace {

struct Flags {
  std::vector<int> clients = {4, 32};
  int repeats = 3;
  size_t params = 25'000'000;
  std::string grpc;  // empty: server::ServeJob as shipped
  bool tls = false;
  size_t chunk_bytes = static_cast<size_t>(core::FederationConfig{}.chunk_bytes);  // a job's default
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    bool ok = true;
    if (key == "--clients") {
      flags.clients.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        int n = 0;
        ok = ok && absl::SimpleAtoi(part, &n) && n >= 1 && n <= 256;
        flags.clients.push_back(n);
      }
    } else if (key == "--repeats") {
      ok = absl::SimpleAtoi(value, &flags.repeats) && flags.repeats >= 1;
    } else if (key == "--params") {
      ok = absl::SimpleAtoi(value, &flags.params) && flags.params >= 4 && flags.params % 4 == 0;
    } else if (key == "--chunk-kib") {
      size_t kib = 0;
      ok = absl::SimpleAtoi(value, &kib) && kib >= 64 && kib <= 3072;
      flags.chunk_bytes = kib << 10;
    } else if (arg == "--tls") {
      flags.tls = true;
    } else if (key == "--grpc") {
      ok = !value.empty() && IsGrpcTuning(value);
      flags.grpc = value;
    } else {
      ok = false;
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad argument \"", arg,
                       "\": expected --clients=4,32 (each 1-256), --repeats=N (>= 1), "
                       "--params=N (a multiple of 4), --chunk-kib=N (64-3072), --grpc=bdp|no-bdp|window=MiB|quota=MB or --tls"));
    }
  }
  return flags;
}

// What a server process reports back to the driver through a pipe.
struct Measurement {
  int64_t start_kib = 0;
  int64_t with_model_kib = 0;
  int64_t downloads_kib = 0;
  int64_t uploads_rss_kib = 0;
  int64_t peak_kib = 0;
  double seconds = 0;
  int ok = 0;
};

bool WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

std::string SiteName(int i) { return absl::StrCat("site-", i); }

// The client process: N threads, one connection each, all uploading the same bytes. Once
// every client holds the global model, one byte goes down `phase_fd` and the uploads start.
int RunClients(int n, size_t params, int port_fd, int phase_fd, const std::optional<BenchPki>& pki) {
  int port = 0;
  if (!ReadAll(port_fd, &port, sizeof(port)) || port == 0) return 1;
  const core::ParameterSet update = FilledUpdate(FloatManifest(params, 4));
  std::atomic<int> failures{0};
  std::barrier downloaded(n, [phase_fd]() noexcept {
    const char byte = 'D';
    WriteAll(phase_fd, &byte, 1);
  });
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i) {
    clients.emplace_back([&, i] {
      std::shared_ptr<grpc::ChannelCredentials> credentials;
      if (pki) {
        absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> loaded = pki->SiteCredentials(SiteName(i));
        if (!loaded.ok()) {
          std::cerr << "client " << i << ": " << loaded.status() << "\n";
          ++failures;
          downloaded.arrive_and_drop();
          return;
        }
        credentials = *loaded;
      }
      wire::FederationClient client(
          wire::Connection{absl::StrCat("127.0.0.1:", port), credentials, /*own_connection=*/true});
      const uint64_t samples = 100 + static_cast<uint64_t>(i);
      absl::StatusOr<wire::Session> session = client.Join(
          SiteName(i), samples, wire::JoinOptions{.timeout = std::chrono::seconds(60), .wait_for_ready = true});
      absl::StatusOr<wire::PulledTask> task =
          session.ok() ? client.PullTrainTask(*session, nullptr) : absl::StatusOr<wire::PulledTask>(session.status());
      downloaded.arrive_and_wait();
      const absl::Status status =
          task.ok() ? client.PushUpdate(*session, wire::UpdateInfoFor(task->header, samples), update) : task.status();
      if (!status.ok()) {
        std::cerr << "client " << i << ": " << status << "\n";
        ++failures;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  return failures == 0 ? 0 : 1;
}

int64_t AcceptedUpdates(const server::FederatedJob& job) {
  int64_t reported = 0;
  for (const server::JobStatus::Client& c : job.Status().clients) reported += c.state == "reported";
  return reported;
}

// The server process: one round with n clients; forks the client process first.
Measurement RunServer(int n, size_t params, size_t chunk_bytes, const std::string& tuning, bool tls) {
  Measurement m;
  m.start_kib = ProcStatusKiB("VmHWM");
  TempDir out("cohort-memory-bench");
  std::optional<BenchPki> pki;
  if (tls) {
    std::vector<std::string> sites;
    for (int i = 0; i < n; ++i) sites.push_back(SiteName(i));
    absl::StatusOr<BenchPki> provisioned = BenchPki::Provision(out.path() / "pki", sites);
    if (!provisioned.ok()) {
      std::cerr << provisioned.status() << "\n";
      return m;
    }
    pki = std::move(*provisioned);
  }
  int port_pipe[2], phase_pipe[2];
  if (::pipe(port_pipe) != 0 || ::pipe(phase_pipe) != 0) return m;
  const pid_t clients = ::fork();
  if (clients == 0) {
    ::close(port_pipe[1]);
    ::close(phase_pipe[0]);
    ::_exit(RunClients(n, params, port_pipe[0], phase_pipe[1], pki));
  }
  ::close(port_pipe[0]);
  ::close(phase_pipe[1]);
  spdlog::set_level(spdlog::level::err);  // plaintext runs would warn that they are insecure

  server::JobOptions options;
  options.config = OneRoundJob("memory-bench", n, chunk_bytes);
  options.initial_model = core::ParameterSet(FloatManifest(params, 4));
  options.out_dir = out.path();
  absl::StatusOr<std::unique_ptr<server::FederatedJob>> job = server::FederatedJob::Create(std::move(options));
  if (!job.ok()) {
    std::cerr << job.status() << "\n";
    ::close(port_pipe[1]);
    ::waitpid(clients, nullptr, 0);
    return m;
  }
  server::ServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  server_options.linger_seconds = 0;
  if (pki) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = pki->ServerCredentials();
    if (!credentials.ok()) {
      std::cerr << credentials.status() << "\n";
      ::close(port_pipe[1]);
      ::waitpid(clients, nullptr, 0);
      return m;
    }
    server_options.credentials = *credentials;
  }
  m.with_model_kib = ProcStatusKiB("VmHWM");

  // Waits for the clients' "all downloaded" byte (or their exit), then samples RSS until
  // every update is accepted.
  std::atomic<bool> stop{false};
  std::thread sampler([&] {
    char byte = 0;
    const bool downloaded = ReadAll(phase_pipe[0], &byte, 1);
    m.downloads_kib = ProcStatusKiB("VmHWM");
    int64_t uploads_rss = 0;
    while (downloaded && !stop) {
      uploads_rss = std::max<int64_t>(uploads_rss, ProcStatusKiB("VmRSS"));
      if (AcceptedUpdates(**job) >= n || (*job)->finished()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    m.uploads_rss_kib = uploads_rss;
  });
  bool port_sent = false;
  server_options.on_listening = [&](int port) { port_sent = WriteAll(port_pipe[1], &port, sizeof(port)); };
  const Clock::time_point start = Clock::now();
  const absl::Status served = ServeJobTuned(**job, server_options, tuning);
  m.seconds = SecondsSince(start);
  if (!port_sent) {
    const int zero = 0;
    WriteAll(port_pipe[1], &zero, sizeof(zero));
  }
  ::close(port_pipe[1]);
  int client_status = 0;
  ::waitpid(clients, &client_status, 0);  // its exit also ends the sampler's wait
  stop = true;
  sampler.join();
  ::close(phase_pipe[0]);
  m.peak_kib = ProcStatusKiB("VmHWM");
  if (!served.ok()) std::cerr << "server: " << served << "\n";
  m.ok = served.ok() && WIFEXITED(client_status) && WEXITSTATUS(client_status) == 0;
  return m;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

double MB(int64_t kib) { return static_cast<double>(kib) * 1024 / 1e6; }

int Main(int argc, char** argv) {
  absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::cerr << flags.status().message() << "\n";
    return 2;
  }
  const double model_mb = static_cast<double>(flags->params) * 4 / 1e6;
  const std::time_t now = std::time(nullptr);
  std::cout << "cohort_memory_bench: model of " << flags->params << " float32 parameters (" << model_mb
            << " MB) in chunks of " << (flags->chunk_bytes >> 10) << " KiB, server: "
            << (flags->grpc.empty() ? "server::ServeJob" : "ServeJob-equivalent, gRPC " + flags->grpc)
            << (flags->tls ? ", mutual TLS" : ", plaintext") << ", started " << std::asctime(std::gmtime(&now))
            << "load average at start: " << LoadAverage() << "\n";
  // The driver only forks and waits: no gRPC, no threads, so each fork starts clean.
  std::map<int, std::vector<Measurement>> results;
  for (int r = 0; r < flags->repeats; ++r) {
    for (int n : flags->clients) {
      int result_pipe[2];
      if (::pipe(result_pipe) != 0) return 1;
      const pid_t server = ::fork();
      if (server == 0) {
        ::close(result_pipe[0]);
        const Measurement m = RunServer(n, flags->params, flags->chunk_bytes, flags->grpc, flags->tls);
        ::_exit(WriteAll(result_pipe[1], &m, sizeof(m)) && m.ok ? 0 : 1);
      }
      ::close(result_pipe[1]);
      Measurement m;
      const bool got = ReadAll(result_pipe[0], &m, sizeof(m));
      ::close(result_pipe[0]);
      int status = 0;
      ::waitpid(server, &status, 0);
      if (!got || !m.ok) {
        std::cerr << "run with " << n << " clients failed\n";
        return 1;
      }
      std::cerr << absl::StrFormat("repeat %d, N=%d: peak %.0f MB in %.1f s\n", r + 1, n, MB(m.peak_kib), m.seconds);
      results[n].push_back(m);
    }
  }
  auto median_of = [](const std::vector<Measurement>& ms, int64_t Measurement::*field) {
    std::vector<double> v;
    for (const Measurement& m : ms) v.push_back(MB(m.*field));
    return Median(v);
  };
  std::cout << absl::StrFormat("%8s %9s %12s %13s %11s %9s %11s  %s\n", "clients", "start MB", "w/ model MB",
                               "downloads MB", "uploads MB", "peak MB", "peak/model", "peak runs (MB)");
  for (const auto& [n, ms] : results) {
    std::string runs;
    for (const Measurement& m : ms)
      absl::StrAppend(&runs, runs.empty() ? "" : " ", absl::StrFormat("%.0f", MB(m.peak_kib)));
    const double peak = median_of(ms, &Measurement::peak_kib);
    std::cout << absl::StrFormat("%8d %9.0f %12.0f %13.0f %11.0f %9.0f %11.2f  %s\n", n,
                                 median_of(ms, &Measurement::start_kib), median_of(ms, &Measurement::with_model_kib),
                                 median_of(ms, &Measurement::downloads_kib),
                                 median_of(ms, &Measurement::uploads_rss_kib), peak, peak / model_mb, runs);
  }
  if (results.size() >= 2) {
    const auto& low = *results.begin();
    const auto& high = *results.rbegin();
    const double grow = median_of(high.second, &Measurement::peak_kib) - median_of(low.second, &Measurement::peak_kib);
    std::cout << absl::StrFormat("peak(N=%d) - peak(N=%d) = %.0f MB = %.2f model sizes (%.3f per extra client)\n",
                                 high.first, low.first, grow, grow / model_mb,
                                 grow / model_mb / (high.first - low.first));
  }
  std::cout << "load average at end: " << LoadAverage() << "\n";
  return 0;
}

}  // namespace
}  // namespace cohort::bench

int main(int argc, char** argv) { return cohort::bench::Main(argc, argv); }
