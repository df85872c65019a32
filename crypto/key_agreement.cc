#include "crypto/key_agreement.h"

#include <sodium.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/hkdf.h"
#include "crypto/sodium_util.h"

namespace cohort::crypto {
namespace {

constexpr std::string_view kSalt = "cohort/update-keys/v1";
constexpr std::string_view kClientToServerLabel = "cohort update key: client to server";
constexpr std::string_view kServerToClientLabel = "cohort update key: server to client";

std::span<const std::uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

absl::Status CheckContextId(absl::string_view field, std::string_view value) {
  if (!value.empty() && value.size() <= kMaxKeyContextIdSize) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("update key context ", field, ": expected 1 to ",
                                                 kMaxKeyContextIdSize, " bytes, got ",
                                                 value.size()));
}

void AppendWithLength(std::vector<std::uint8_t>& out, std::string_view value) {
  out.push_back(static_cast<std::uint8_t>(value.size() >> 8));
  out.push_back(static_cast<std::uint8_t>(value.size() & 0xff));
  out.insert(out.end(), value.begin(), value.end());
}

// info(dir) as laid out in key_agreement.h.
std::vector<std::uint8_t> KeyInfo(std::string_view label, const UpdateKeyContext& context,
                                  const X25519PublicKey& client_public,
                                  const X25519PublicKey& server_public) {
  std::vector<std::uint8_t> info(label.begin(), label.end());
  AppendWithLength(info, context.job_id);
  AppendWithLength(info, context.client_id);
  info.insert(info.end(), client_public.begin(), client_public.end());
  info.insert(info.end(), server_public.begin(), server_public.end());
  return info;
}

}  // namespace

X25519KeyPair GenerateX25519KeyPair() {
  internal::EnsureSodiumInitialized();
  X25519KeyPair pair;
  pair.secret_key = SecretBytes(kX25519KeySize);
  randombytes_buf(pair.secret_key.mutable_span().data(), kX25519KeySize);
  crypto_scalarmult_base(pair.public_key.data(), pair.secret_key.data());
  return pair;
}

absl::StatusOr<X25519KeyPair> X25519KeyPairFromSecret(std::span<const std::uint8_t> secret_key) {
  internal::EnsureSodiumInitialized();
  if (secret_key.size() != kX25519KeySize) {
    return absl::InvalidArgumentError(absl::StrCat("X25519 secret key: expected ", kX25519KeySize,
                                                   " bytes, got ", secret_key.size()));
  }
  X25519KeyPair pair;
  pair.secret_key = SecretBytes::CopyOf(secret_key);
  if (crypto_scalarmult_base(pair.public_key.data(), pair.secret_key.data()) != 0) {
    return absl::InvalidArgumentError("X25519 secret key: derives the all-zero public key");
  }
  return pair;
}

absl::StatusOr<SecretBytes> X25519(std::span<const std::uint8_t> scalar,
                                   std::span<const std::uint8_t> u) {
  internal::EnsureSodiumInitialized();
  if (scalar.size() != kX25519KeySize || u.size() != kX25519KeySize) {
    return absl::InvalidArgumentError(absl::StrCat("X25519: expected a ", kX25519KeySize,
                                                   "-byte scalar and a ", kX25519KeySize,
                                                   "-byte u-coordinate, got ", scalar.size(),
                                                   " and ", u.size()));
  }
  SecretBytes shared(kX25519KeySize);
  // libsodium returns -1 exactly when the output is all zeros (a low-order input).
  if (crypto_scalarmult(shared.mutable_span().data(), scalar.data(), u.data()) != 0) {
    return absl::FailedPreconditionError(
        "X25519: the peer's public key is a low-order point (the shared secret is all "
        "zeros); refusing to derive keys from it");
  }
  return shared;
}

absl::StatusOr<UpdateKeys> DeriveUpdateKeys(const X25519KeyPair& own,
                                            const X25519PublicKey& peer_public, Side side,
                                            const UpdateKeyContext& context) {
  if (absl::Status s = CheckContextId("job_id", context.job_id); !s.ok()) return s;
  if (absl::Status s = CheckContextId("client_id", context.client_id); !s.ok()) return s;
  absl::StatusOr<SecretBytes> shared = X25519(own.secret_key.span(), peer_public);
  if (!shared.ok()) return shared.status();

  const bool is_client = side == Side::kClient;
  const X25519PublicKey& client_public = is_client ? own.public_key : peer_public;
  const X25519PublicKey& server_public = is_client ? peer_public : own.public_key;

  absl::StatusOr<SecretBytes> client_to_server = HkdfSha256(
      shared->span(), Bytes(kSalt),
      KeyInfo(kClientToServerLabel, context, client_public, server_public), kUpdateKeySize);
  if (!client_to_server.ok()) return client_to_server.status();
  absl::StatusOr<SecretBytes> server_to_client = HkdfSha256(
      shared->span(), Bytes(kSalt),
      KeyInfo(kServerToClientLabel, context, client_public, server_public), kUpdateKeySize);
  if (!server_to_client.ok()) return server_to_client.status();

  UpdateKeys keys;
  keys.send_key = std::move(is_client ? *client_to_server : *server_to_client);
  keys.receive_key = std::move(is_client ? *server_to_client : *client_to_server);
  return keys;
}

}  // namespace cohort::crypto
