#pragma once
// `cohort client --workers W`: the site's extra local worker processes. The process the
// operator started re-executes its own command line with `--worker-rank R` for R = 1..W-1
// (each loads the same data and joins the group as a follower), keeps their pids, and, when
// training fails, says which of them exited and how: a Gloo error alone cannot name the dead.

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cohort::cli {

class SiteWorkers {
 public:
  SiteWorkers() = default;
  SiteWorkers(const SiteWorkers&) = delete;
  SiteWorkers& operator=(const SiteWorkers&) = delete;
  // Kills the workers still running (they die with this process anyway) and reaps them.
  ~SiteWorkers();

  // Starts local workers 1..count-1 of this node, global ranks first_rank + r, each with this
  // process's command line plus `extra_args` and `--worker-rank r`.
  absl::Status Start(int count, int first_rank, const std::vector<std::string>& extra_args);
  // "worker 2 (pid 123) was killed by signal 9; ..." for the workers that have exited;
  // empty when all still run.
  std::string DescribeExits();

 private:
  struct Worker {
    int rank;
    pid_t pid;
    bool reaped = false;
    int status = 0;
  };
  std::vector<Worker> workers_;
};

}  // namespace cohort::cli
