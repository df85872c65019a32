#include "crypto/aes_gcm.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/openssl_util.h"

namespace cohort::crypto {
namespace {

// EVP_CipherUpdate takes an int length; larger buffers go through in pieces of this
// size (a multiple of the AES block, so GCM's streaming state stays aligned).
constexpr std::size_t kMaxUpdateBytes = std::size_t{1} << 30;

absl::Status CheckSize(absl::string_view what, std::size_t got, std::size_t want) {
  if (got == want) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("AES-256-GCM ", what, ": expected ", want, " bytes, got ", got));
}

}  // namespace

absl::StatusOr<Aes256Gcm> Aes256Gcm::Create(std::span<const std::uint8_t> key) {
  if (absl::Status s = CheckSize("key", key.size(), kKeySize); !s.ok()) return s;
  internal::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return internal::OpenSslError("EVP_CIPHER_CTX_new");
  // The key schedule is set up here, once; each message only sets its nonce.
  if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr, 1) != 1) {
    return internal::OpenSslError("EVP_CipherInit_ex(AES-256-GCM, key)");
  }
  return Aes256Gcm(ctx.release());
}

Aes256Gcm::Aes256Gcm(Aes256Gcm&& other) noexcept : ctx_(std::exchange(other.ctx_, nullptr)) {}

Aes256Gcm& Aes256Gcm::operator=(Aes256Gcm&& other) noexcept {
  if (this != &other) {
    EVP_CIPHER_CTX_free(ctx_);
    ctx_ = std::exchange(other.ctx_, nullptr);
  }
  return *this;
}

// EVP_CIPHER_CTX_free cleanses the context, which holds the expanded key.
Aes256Gcm::~Aes256Gcm() { EVP_CIPHER_CTX_free(ctx_); }

absl::Status Aes256Gcm::Start(std::span<const std::uint8_t> nonce,
                              std::span<const std::uint8_t> aad, bool encrypt) {
  if (ctx_ == nullptr) return absl::FailedPreconditionError("AES-256-GCM: object was moved from");
  if (absl::Status s = CheckSize("nonce", nonce.size(), kNonceSize); !s.ok()) return s;
  // Cipher and key stay as set in Create; only the direction and the nonce change.
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce.data(), encrypt ? 1 : 0) != 1) {
    return internal::OpenSslError("EVP_CipherInit_ex(AES-256-GCM, nonce)");
  }
  for (std::size_t done = 0; done < aad.size();) {
    const std::size_t n = std::min(aad.size() - done, kMaxUpdateBytes);
    int out_len = 0;
    if (EVP_CipherUpdate(ctx_, nullptr, &out_len, aad.data() + done, static_cast<int>(n)) != 1) {
      return internal::OpenSslError("EVP_CipherUpdate(AES-256-GCM, aad)");
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::Status Aes256Gcm::Transform(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) {
  for (std::size_t done = 0; done < in.size();) {
    const std::size_t n = std::min(in.size() - done, kMaxUpdateBytes);
    int out_len = 0;
    if (EVP_CipherUpdate(ctx_, out.data() + done, &out_len, in.data() + done,
                         static_cast<int>(n)) != 1) {
      return internal::OpenSslError("EVP_CipherUpdate(AES-256-GCM)");
    }
    // GCM is a stream mode: OpenSSL writes exactly what it reads.
    if (static_cast<std::size_t>(out_len) != n) {
      return absl::InternalError(absl::StrCat("EVP_CipherUpdate(AES-256-GCM) wrote ", out_len,
                                              " bytes for ", n, " input bytes"));
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::Status Aes256Gcm::Encrypt(std::span<const std::uint8_t> nonce,
                                std::span<const std::uint8_t> aad,
                                std::span<const std::uint8_t> plaintext,
                                std::span<std::uint8_t> ciphertext, std::span<std::uint8_t> tag) {
  if (absl::Status s = CheckSize("ciphertext buffer", ciphertext.size(), plaintext.size());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckSize("tag buffer", tag.size(), kTagSize); !s.ok()) return s;
  if (absl::Status s = Start(nonce, aad, /*encrypt=*/true); !s.ok()) return s;
  if (absl::Status s = Transform(plaintext, ciphertext); !s.ok()) return s;
  int final_len = 0;
  if (EVP_EncryptFinal_ex(ctx_, nullptr, &final_len) != 1) {
    return internal::OpenSslError("EVP_EncryptFinal_ex(AES-256-GCM)");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), tag.data()) !=
      1) {
    return internal::OpenSslError("EVP_CTRL_GCM_GET_TAG");
  }
  return absl::OkStatus();
}

absl::Status Aes256Gcm::Decrypt(std::span<const std::uint8_t> nonce,
                                std::span<const std::uint8_t> aad,
                                std::span<const std::uint8_t> ciphertext,
                                std::span<const std::uint8_t> tag,
                                std::span<std::uint8_t> plaintext) {
  if (absl::Status s = CheckSize("plaintext buffer", plaintext.size(), ciphertext.size());
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckSize("tag", tag.size(), kTagSize); !s.ok()) return s;
  if (absl::Status s = Start(nonce, aad, /*encrypt=*/false); !s.ok()) return s;
  absl::Status status = Transform(ciphertext, plaintext);
  if (status.ok()) {
    // The ctrl takes a mutable pointer; give it a copy rather than cast away const.
    std::uint8_t expected_tag[kTagSize];
    std::copy(tag.begin(), tag.end(), expected_tag);
    if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize),
                            expected_tag) != 1) {
      status = internal::OpenSslError("EVP_CTRL_GCM_SET_TAG");
    } else {
      int final_len = 0;
      if (EVP_DecryptFinal_ex(ctx_, nullptr, &final_len) != 1) {
        ERR_clear_error();
        status = absl::DataLossError(
            absl::StrCat("AES-256-GCM: authentication failed for ", ciphertext.size(),
                         " bytes of ciphertext: the ciphertext, tag, nonce or associated data "
                         "was altered, or the key is not the one it was sealed with"));
      }
    }
  }
  if (!status.ok() && !plaintext.empty()) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
  }
  return status;
}

}  // namespace cohort::crypto
