#pragma once
// What this process uses, for the `cohort_process_*` metrics: resident memory from
// /proc/self/statm, and its peak and CPU time (user + system) from getrusage.

#include <cstdint>

namespace cohort::observe {

struct ProcessStats {
  uint64_t resident_bytes = 0;  // 0 where /proc is not mounted
  uint64_t peak_resident_bytes = 0;  // the most resident memory the process has held so far
  double cpu_seconds = 0;
};

ProcessStats ReadProcessStats();

}  // namespace cohort::observe
