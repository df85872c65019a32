#include "server/checkpoint_key.h"

#include <openssl/rand.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "crypto/hkdf.h"
#include "crypto/secret_file.h"
#include "storage/atomic_write.h"
#include "storage/file.h"

namespace cohort::server {

absl::StatusOr<core::CheckpointKey> DeriveCheckpointKey(const crypto::SecretBytes& private_key_pem,
                                                        std::string_view kit_name) {
  static constexpr std::string_view kSalt = "cohort/v1 checkpoint";
  absl::StatusOr<crypto::SecretBytes> derived = crypto::HkdfSha256(
      std::span(private_key_pem.data(), private_key_pem.size()),
      std::span(reinterpret_cast<const uint8_t*>(kSalt.data()), kSalt.size()),
      std::span(reinterpret_cast<const uint8_t*>(kit_name.data()), kit_name.size()), sizeof(core::CheckpointKey::bytes));
  if (!derived.ok()) return derived.status();
  core::CheckpointKey key;
  std::memcpy(key.bytes.data(), derived->data(), key.bytes.size());
  return key;
}

absl::StatusOr<core::CheckpointKey> LoadOrCreateCheckpointKeyFile(const std::filesystem::path& path) {
  core::CheckpointKey key;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(key.bytes.data()), static_cast<int>(key.bytes.size())) != 1) {
      return absl::InternalError("RAND_bytes failed: no random checkpoint key");
    }
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
    if (absl::Status s = storage::WriteFileAtomically(
            path, std::span(reinterpret_cast<const uint8_t*>(key.bytes.data()), key.bytes.size()),
            storage::kSecretFileMode, storage::IfExists::kFail);
        !s.ok()) {
      if (s.code() != absl::StatusCode::kAlreadyExists) return s;  // lost a race: read the winner's
    } else {
      spdlog::info("created the checkpoint key {}", path.string());
      return key;
    }
  }
  absl::StatusOr<crypto::SecretBytes> read = crypto::ReadSecretFile(path);
  if (!read.ok()) return read.status();
  if (read->size() != key.bytes.size()) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint key ", path.string(), ": expected ",
                                                      key.bytes.size(), " bytes, got ", read->size(),
                                                      "; restore the file, or delete it and the checkpoint"));
  }
  std::memcpy(key.bytes.data(), read->data(), key.bytes.size());
  return key;
}

}  // namespace cohort::server
