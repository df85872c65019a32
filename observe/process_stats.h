#pragma once
// What this process uses, for the `cohort_process_*` metrics: resident memory from
// /proc/self/statm and CPU time (user + system) from getrusage.

#include <cstdint>

namespace cohort::observe {

struct ProcessStats {
  uint64_t resident_bytes = 0;  // 0 where /proc is not mounted
  double cpu_seconds = 0;
};

ProcessStats ReadProcessStats();

}  // namespace cohort::observe
