#pragma once
// `--metrics-listen ADDR:PORT` of `cohort server` and `cohort client`: starts the process's
// read-only HTTP listener (observe/http_listener.h) with a fresh access token, written to
// `token_file` (mode 0600). docs/operability.md describes the endpoints and the access rule.

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "observe/http_listener.h"

namespace cohort::cli {

// "none" (or empty): no listener, and nullptr. Otherwise the listener, serving `routes`;
// its address is logged, and when it is not a loopback address the token is printed too,
// since callers from elsewhere need it. InvalidArgument or Unavailable naming the address.
absl::StatusOr<std::unique_ptr<observe::HttpListener>> StartMetricsListener(
    const std::string& address, const std::filesystem::path& token_file,
    std::map<std::string, observe::HttpHandler> routes);

}  // namespace cohort::cli
