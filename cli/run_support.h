#pragma once
// What both kinds of `cohort run` share: the command's flags, and starting and stopping the
// local processes of a federation (one server, clients or parties) on loopback.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cohort::cli {

struct RunFlags {
  std::string job_file, out = "runs/latest", partition;
  std::string tensorboard;    // passed to the server's --tensorboard
  std::string initial_model;  // passed to the server's --initial-model
  bool insecure = false;
  int clients = 0, rounds = 0, port = 0;
  int workers = 1;  // worker processes per client (data parallelism at each site)
  int64_t seed = -1;
  int64_t train_subset = -1;
};

// The processes this run started; KillChildren (also a signal handler) ends them all.
std::vector<pid_t>& Children();
void KillChildren(int);
// Ends every process this run started (SIGTERM), waiting for each; the run goes on.
void StopChildren();
// The last line of `log` with "[error]" in it, else its last line, at most 300 characters:
// why a process stopped, for the run's own output.
std::string LastErrorLine(const std::filesystem::path& log);

// A port on 127.0.0.1 that was free a moment ago, and not `other_than` (a port already
// chosen for something else: two probes in a row can return the same port, which the
// kernel frees at once).
int FreeLoopbackPort(int other_than = 0);

// Starts `cohort ARGS...` with stdout and stderr going to `log`.
pid_t Spawn(const std::vector<std::string>& args, const std::filesystem::path& log);

// Creates OUT/logs and writes the effective job to OUT/job.json; 0 on success, else the
// command's exit code (2: the directory, 1: the write), with the error logged.
int PrepareRunDirectory(const std::filesystem::path& out, const nlohmann::json& job);

// One vertical federation from a vertical job config (run_vertical.cc).
int RunVerticalFederation(const RunFlags& f, nlohmann::json job);

}  // namespace cohort::cli
