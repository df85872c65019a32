#include "observe/access_token.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "storage/atomic_write.h"

namespace cohort::observe {

absl::StatusOr<std::string> NewAccessToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("cannot draw the dashboard's access token: RAND_bytes failed");
  }
  constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (const unsigned char b : bytes) {
    token += kHex[b >> 4];
    token += kHex[b & 15];
  }
  return token;
}

absl::Status WriteAccessTokenFile(const std::filesystem::path& path, std::string_view token) {
  return storage::WriteFileAtomically(path, std::string(token) + "\n", 0600);
}

bool TokensEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cohort::observe
