#include "cli/run_support.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/status/status.h"
#include "storage/atomic_write.h"

namespace cohort::cli {

std::vector<pid_t>& Children() {
  static std::vector<pid_t> children;
  return children;
}

void KillChildren(int) {
  for (pid_t pid : Children()) ::kill(pid, SIGTERM);
  std::_Exit(130);
}

void StopChildren() {
  for (pid_t pid : Children()) ::kill(pid, SIGTERM);
  for (pid_t pid : Children()) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
}

std::string LastErrorLine(const std::filesystem::path& log) {
  std::ifstream in(log);
  std::string line, last, last_error;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    last = line;
    if (line.find("[error]") != std::string::npos) last_error = line;
  }
  std::string chosen = last_error.empty() ? last : last_error;
  if (chosen.size() > 300) chosen = chosen.substr(0, 300) + "...";
  return chosen.empty() ? "(its log is empty: " + log.string() + ")" : chosen;
}

namespace {

// A port on 127.0.0.1 free at this moment (bound to port 0, then released).
int ProbeLoopbackPort() {
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

}  // namespace

int FreeLoopbackPort(int other_than) {
  // The kernel may hand the port just released to the next probe: ask again until it differs.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int port = ProbeLoopbackPort();
    if (port != other_than) return port;
  }
  return 0;
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

int PrepareRunDirectory(const std::filesystem::path& out, const nlohmann::json& job) {
  std::error_code ec;
  std::filesystem::create_directories(out / "logs", ec);
  if (ec) {
    spdlog::error("--out {}: {}", out.string(), ec.message());
    return 2;
  }
  if (absl::Status s = storage::WriteFileAtomically(out / "job.json", job.dump(2) + "\n"); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  return 0;
}

}  // namespace cohort::cli
