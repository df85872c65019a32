#include "cli/site_workers.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort::cli {
namespace {

std::vector<std::string> OwnCommandLine() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::string current;
  for (char c : all) {
    if (c == '\0') {
      args.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  return args;
}

}  // namespace

SiteWorkers::~SiteWorkers() {
  for (Worker& w : workers_) {
    if (!w.reaped) {
      kill(w.pid, SIGTERM);
      waitpid(w.pid, &w.status, 0);
    }
  }
}

absl::Status SiteWorkers::Start(int count, int first_rank, const std::vector<std::string>& extra_args) {
  const std::vector<std::string> base = OwnCommandLine();
  if (base.empty()) return absl::InternalError("cannot read /proc/self/cmdline to start the site's workers");
  for (int r = 1; r < count; ++r) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    args.push_back("--worker-rank");
    args.push_back(std::to_string(r));
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError(absl::StrCat("fork failed starting worker ", first_rank + r));
    if (pid == 0) {
      // A worker never outlives the process that started it.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    workers_.push_back({first_rank + r, pid});
  }
  return absl::OkStatus();
}

std::string SiteWorkers::DescribeExits() {
  std::vector<std::string> exits;
  for (Worker& w : workers_) {
    if (!w.reaped && waitpid(w.pid, &w.status, WNOHANG) == w.pid) w.reaped = true;
    if (!w.reaped) continue;
    exits.push_back(WIFSIGNALED(w.status)
                        ? absl::StrCat("worker ", w.rank, " (pid ", w.pid, ") was killed by signal ", WTERMSIG(w.status))
                        : absl::StrCat("worker ", w.rank, " (pid ", w.pid, ") exited with code ",
                                       WEXITSTATUS(w.status)));
  }
  return absl::StrJoin(exits, "; ");
}

}  // namespace cohort::cli
