#pragma once
// Reading private keys and other secrets from files written by storage::WriteFileAtomically
// with storage::kSecretFileMode.

#include <filesystem>

#include "absl/status/statusor.h"
#include "crypto/secret.h"

namespace cohort::crypto {

// Reads a private key or other secret into wiped-on-free memory. Fails with
// FailedPrecondition when the file is readable or writable by group or others, the
// way ssh refuses a world-readable identity file.
absl::StatusOr<SecretBytes> ReadSecretFile(const std::filesystem::path& path);

}  // namespace cohort::crypto
