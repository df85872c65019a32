#pragma once
// The key the server authenticates its checkpoints under (core/checkpoint.h). It must be
// stable across restarts of the same server and unknown to anyone who can only write the
// output directory:
//   - with a startup kit: HKDF-SHA256 of the kit's private key (salt "cohort/v1 checkpoint",
//     info = the kit's name), so nothing new needs keeping and a kit restored from backup
//     resumes its checkpoints;
//   - without one (--insecure, tests): 32 random bytes kept in a key file of mode 0600,
//     created on first use.

#include <filesystem>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/checkpoint.h"
#include "crypto/secret.h"

namespace cohort::server {

absl::StatusOr<core::CheckpointKey> DeriveCheckpointKey(const crypto::SecretBytes& private_key_pem,
                                                        std::string_view kit_name);

// Reads the key at `path`, or creates it (random, 0600) when the file does not exist.
// FailedPrecondition when it is readable by others or is not 32 bytes.
absl::StatusOr<core::CheckpointKey> LoadOrCreateCheckpointKeyFile(const std::filesystem::path& path);

}  // namespace cohort::server
