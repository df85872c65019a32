#pragma once
// The bearer token that lets a caller off loopback read the HTTP listener
// (observe/http_listener.h): 32 random bytes in hex, new at every start, printed at start
// and kept in OUT/dashboard.token (mode 0600) for the operator's tools.

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace cohort::observe {

// 64 lowercase hex characters from the system's CSPRNG.
absl::StatusOr<std::string> NewAccessToken();
// Writes `token` and a newline to `path` atomically, mode exactly 0600.
absl::Status WriteAccessTokenFile(const std::filesystem::path& path, std::string_view token);
// Compares in time independent of where they differ.
bool TokensEqual(std::string_view a, std::string_view b);

}  // namespace cohort::observe
