#pragma once
// What the server benchmarks share: a temp directory, the model layout, a job config for
// one small round, median and peak-RSS readers.

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/parameter_set.h"

namespace cohort::bench {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::exit(1);
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// `params` float32 parameters as `tensors` equal 1-D tensors (the last takes the rest).
inline core::Manifest FloatManifest(size_t params, int tensors) {
  std::vector<core::TensorSpec> specs;
  const size_t each = params / static_cast<size_t>(tensors);
  for (int t = 0; t < tensors; ++t) {
    const size_t n = t + 1 == tensors ? params - each * static_cast<size_t>(tensors - 1) : each;
    specs.push_back({"layer" + std::to_string(t) + ".weight", core::DType::kFloat32, {static_cast<int64_t>(n)}});
  }
  return core::Manifest(std::move(specs));
}

// An update with small finite values (every page touched, so it is resident before timing).
inline core::ParameterSet FilledUpdate(const core::Manifest& manifest) {
  core::ParameterSet update(manifest);
  std::span<float> values = update.floats();
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 2048) * 1e-6f - 1e-3f;
  return update;
}

// One round, `clients` clients selected and required, no evaluation, nothing that times
// out while a large model streams over a loaded machine.
inline core::JobConfig OneRoundJob(const std::string& name, int64_t clients, size_t chunk_bytes) {
  core::JobConfig config;
  config.name = name;
  config.model_config = {{"name", "bench"}};
  config.federation.rounds = 1;
  config.federation.clients_per_round = clients;
  config.federation.min_clients = clients;
  config.federation.round_timeout_s = 3600;
  config.federation.heartbeat_timeout_s = 3600;
  config.federation.max_round_retries = 0;
  config.federation.chunk_bytes = static_cast<int64_t>(chunk_bytes);
  return config;
}

// A field of /proc/self/status in KiB (VmHWM: peak resident set; VmRSS: current).
inline int64_t ProcStatusKiB(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

}  // namespace cohort::bench
