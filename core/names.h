#pragma once
// The one rule for names that become identities, file names and log fields: participant
// (site, server, admin, auditor) names, the federation's name and a job's name. Each ends up
// as a directory name, a certificate CN, part of the sealing context and an audit field, so
// a name that passed one check and failed another would be accepted and then refuse every
// Join or provisioning run: 1-64 of [A-Za-z0-9._-], starting with a letter or digit.

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace cohort::core {

inline constexpr std::size_t kMaxNameBytes = 64;

// InvalidArgument naming `field` and quoting at most kMaxNameBytes printable characters of
// `name` (any other byte shown as '?').
absl::Status ValidateName(std::string_view field, std::string_view name);

}  // namespace cohort::core
