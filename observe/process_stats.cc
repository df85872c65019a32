#include "observe/process_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

namespace cohort::observe {

ProcessStats ReadProcessStats() {
  ProcessStats stats;
  // statm: size resident shared text lib data dt, in pages.
  if (std::FILE* statm = std::fopen("/proc/self/statm", "r")) {
    unsigned long long size = 0, resident = 0;
    if (std::fscanf(statm, "%llu %llu", &size, &resident) == 2) {
      stats.resident_bytes = resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    }
    std::fclose(statm);
  }
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) {
    auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    stats.cpu_seconds = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    stats.peak_resident_bytes = static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
  }
  return stats;
}

}  // namespace cohort::observe
