#pragma once
// Test helper: parses a /metrics page with Python's prometheus_client parser
// (tests/observe/parse_prometheus.py, Debian's python3-prometheus-client) and returns what
// it read, or the parser's refusal.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace cohort::testing {

inline constexpr const char* kPrometheusParser = COHORT_PROMETHEUS_PARSER;

// {family: {"type", "help", "samples": [[name, {labels}, value]]}}; counters' families are
// named without "_total", as the parser names them.
inline absl::StatusOr<nlohmann::json> ParseWithPrometheusClient(const std::string& page) {
  const std::filesystem::path input =
      std::filesystem::temp_directory_path() / absl::StrCat("cohort-metrics-", ::getpid(), "-", std::rand(), ".txt");
  { std::ofstream(input) << page; }
  const std::string command = absl::StrCat("/usr/bin/python3 ", kPrometheusParser, " < ", input.string(), " 2>&1");
  std::string output;
  int status = -1;
  if (std::FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    size_t n;
    while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
    status = ::pclose(pipe);
  }
  std::filesystem::remove(input);
  if (status != 0) return absl::InvalidArgumentError(absl::StrCat("prometheus_client refused the page: ", output));
  nlohmann::json parsed = nlohmann::json::parse(output, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return absl::InternalError(absl::StrCat("parser output is not JSON: ", output));
  return parsed;
}

// The value of the sample `name` with exactly `labels` in a parsed page; NaN when absent.
inline double SampleValue(const nlohmann::json& families, const std::string& family, const std::string& name,
                          const nlohmann::json& labels = nlohmann::json::object()) {
  if (!families.contains(family)) return std::nan("");
  for (const nlohmann::json& sample : families[family]["samples"]) {
    if (sample[0] == name && sample[1] == labels && sample[2].is_number()) return sample[2].get<double>();
  }
  return std::nan("");
}

}  // namespace cohort::testing
