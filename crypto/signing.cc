#include "crypto/signing.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "storage/atomic_write.h"
#include "storage/file.h"

namespace cohort::crypto {
namespace {

// sodium_init() is idempotent and thread-safe; it fails only when the system has
// no usable randomness source, in which case no key could be trusted anyway.
void EnsureSodium() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) {
      std::fprintf(stderr, "cohort: libsodium failed to initialise (no randomness source)\n");
      std::abort();
    }
  });
}

std::string BytesToHex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(bytes.size() * 2, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    hex[2 * i] = kDigits[bytes[i] >> 4];
    hex[2 * i + 1] = kDigits[bytes[i] & 0x0f];
  }
  return hex;
}

int HexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes exactly out.size() bytes from hex; `what` names the value in errors.
absl::Status HexToBytes(std::string_view hex, std::span<std::uint8_t> out, std::string_view what) {
  if (hex.size() != out.size() * 2) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: expected %d hex characters, got %d",
                                                      what, out.size() * 2, hex.size()));
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = HexDigitValue(hex[2 * i]);
    const int lo = HexDigitValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: expected hex digits, found '%c' at position %d", what,
                          hi < 0 ? hex[2 * i] : hex[2 * i + 1], hi < 0 ? 2 * i : 2 * i + 1));
    }
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return absl::OkStatus();
}

std::string_view StripWhitespace(std::string_view text) {
  constexpr std::string_view kWhitespace = " \t\r\n";
  const std::size_t first = text.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kWhitespace) - first + 1);
}

// Reads a small text file; `max_bytes` bounds what a key file may hold.
absl::StatusOr<std::string> ReadSmallFile(const std::filesystem::path& path, std::size_t max_bytes,
                                          struct stat* info) {
  absl::StatusOr<storage::File> file = storage::File::Open(path, O_RDONLY);
  if (!file.ok()) return file.status();
  absl::StatusOr<struct stat> stat = file->Stat();
  if (!stat.ok()) return stat.status();
  *info = *stat;
  if (!S_ISREG(info->st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  }
  if (static_cast<std::size_t>(info->st_size) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: expected a key file of at most %d bytes, file has %d bytes",
                        path.string(), max_bytes, info->st_size));
  }
  std::string contents(max_bytes, '\0');
  absl::StatusOr<std::size_t> read =
      file->PreadAll(0, std::as_writable_bytes(std::span(contents.data(), contents.size())));
  if (!read.ok()) {
    sodium_memzero(contents.data(), contents.size());
    return read.status();
  }
  contents.resize(*read);
  return contents;
}

constexpr std::size_t kMaxKeyFileBytes = 256;

}  // namespace

std::string SignatureToHex(const Signature& signature) { return BytesToHex(signature); }

absl::StatusOr<Signature> SignatureFromHex(std::string_view hex) {
  Signature signature;
  if (absl::Status s = HexToBytes(hex, signature, "Ed25519 signature"); !s.ok()) return s;
  return signature;
}

absl::StatusOr<SigningPublicKey> SigningPublicKey::FromBytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() != kSigningPublicKeyBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Ed25519 public key: expected %d bytes, got %d", kSigningPublicKeyBytes, bytes.size()));
  }
  std::array<std::uint8_t, kSigningPublicKeyBytes> key;
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return SigningPublicKey(key);
}

absl::StatusOr<SigningPublicKey> SigningPublicKey::FromHex(std::string_view hex) {
  std::array<std::uint8_t, kSigningPublicKeyBytes> key;
  if (absl::Status s = HexToBytes(hex, key, "Ed25519 public key"); !s.ok()) return s;
  return SigningPublicKey(key);
}

bool SigningPublicKey::Verify(std::span<const std::uint8_t> message,
                              const Signature& signature) const {
  EnsureSodium();
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     bytes_.data()) == 0;
}

bool SigningPublicKey::Verify(std::string_view message, const Signature& signature) const {
  return Verify(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(message.data()),
                                              message.size()),
                signature);
}

std::string SigningPublicKey::ToHex() const { return BytesToHex(bytes_); }

SigningKey SigningKey::Generate() {
  EnsureSodium();
  SigningKey key;
  std::array<std::uint8_t, kSigningPublicKeyBytes> public_key;
  crypto_sign_keypair(public_key.data(), key.secret_.data());
  key.public_key_ = SigningPublicKey(public_key);
  return key;
}

absl::StatusOr<SigningKey> SigningKey::FromSeed(std::span<const std::uint8_t> seed) {
  if (seed.size() != kSigningSeedBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Ed25519 seed: expected %d bytes, got %d", kSigningSeedBytes, seed.size()));
  }
  EnsureSodium();
  SigningKey key;
  std::array<std::uint8_t, kSigningPublicKeyBytes> public_key;
  crypto_sign_seed_keypair(public_key.data(), key.secret_.data(), seed.data());
  key.public_key_ = SigningPublicKey(public_key);
  return key;
}

SigningKey::SigningKey(SigningKey&& other) noexcept
    : secret_(other.secret_), public_key_(other.public_key_) {
  other.Wipe();
}

SigningKey& SigningKey::operator=(SigningKey&& other) noexcept {
  if (this != &other) {
    secret_ = other.secret_;
    public_key_ = other.public_key_;
    other.Wipe();
  }
  return *this;
}

SigningKey::~SigningKey() { Wipe(); }

void SigningKey::Wipe() { sodium_memzero(secret_.data(), secret_.size()); }

Signature SigningKey::Sign(std::span<const std::uint8_t> message) const {
  EnsureSodium();
  Signature signature;
  crypto_sign_detached(signature.data(), nullptr, message.data(), message.size(), secret_.data());
  return signature;
}

Signature SigningKey::Sign(std::string_view message) const {
  return Sign(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(message.data()),
                                            message.size()));
}

absl::Status WriteSigningKeyFile(const std::filesystem::path& path, const SigningKey& key) {
  // The seed is the first half of libsodium's secret key layout.
  std::string text =
      BytesToHex(std::span<const std::uint8_t>(key.secret_.data(), kSigningSeedBytes)) + "\n";
  absl::Status status =
      storage::WriteFileAtomically(path, text, storage::kSecretFileMode, storage::IfExists::kFail);
  sodium_memzero(text.data(), text.size());
  return status;
}

absl::StatusOr<SigningKey> ReadSigningKeyFile(const std::filesystem::path& path) {
  struct stat info;
  absl::StatusOr<std::string> contents = ReadSmallFile(path, kMaxKeyFileBytes, &info);
  if (!contents.ok()) return contents.status();
  if ((info.st_mode & 077) != 0) {
    sodium_memzero(contents->data(), contents->size());
    return absl::PermissionDeniedError(absl::StrFormat(
        "%s: private key file has mode %04o, which lets other users read it; expected 0600 "
        "(chmod 600 %s)",
        path.string(), info.st_mode & 07777, path.string()));
  }
  std::array<std::uint8_t, kSigningSeedBytes> seed;
  const absl::Status decoded =
      HexToBytes(StripWhitespace(*contents), seed, "Ed25519 private key (seed)");
  sodium_memzero(contents->data(), contents->size());
  if (!decoded.ok()) {
    sodium_memzero(seed.data(), seed.size());
    // Not decoded.message(): it would quote a character of what may be a secret.
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": expected one line of 64 hex characters (an Ed25519 seed)"));
  }
  absl::StatusOr<SigningKey> key = SigningKey::FromSeed(seed);
  sodium_memzero(seed.data(), seed.size());
  return key;
}

absl::Status WritePublicKeyFile(const std::filesystem::path& path, const SigningPublicKey& key) {
  return storage::WriteFileAtomically(path, key.ToHex() + "\n", storage::kPublicFileMode,
                                      storage::IfExists::kFail);
}

absl::StatusOr<SigningPublicKey> ReadPublicKeyFile(const std::filesystem::path& path) {
  struct stat info;
  absl::StatusOr<std::string> contents = ReadSmallFile(path, kMaxKeyFileBytes, &info);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<SigningPublicKey> key = SigningPublicKey::FromHex(StripWhitespace(*contents));
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", key.status().message()));
  }
  return key;
}

}  // namespace cohort::crypto
