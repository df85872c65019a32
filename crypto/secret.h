#pragma once
// SecretBytes: the one type that holds key material (AES keys, X25519 secret keys,
// HKDF output) in Cohort.
//
// Guarantees:
//   - The bytes are wiped with sodium_memzero when the object is destroyed and when
//     it is moved from (the moved-from object is left empty), so a key leaves no copy
//     behind in memory this type owned.
//   - It is move-only: a copy of a key has to be made on purpose with Clone().
//   - It cannot be printed: there is no operator<< and no fmt formatter, so a key
//     cannot reach a log line by accident. Compare keys with ConstantTimeEquals().
// Not guaranteed: the memory is not locked (it may be swapped out), and bytes a caller
// copies out of data() are the caller's to wipe.

#include <sodium.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <span>
#include <utility>

namespace cohort::crypto {

class SecretBytes {
 public:
  SecretBytes() = default;
  // `size` zero bytes, to be filled through mutable_span().
  explicit SecretBytes(std::size_t size)
      : bytes_(size == 0 ? nullptr : new std::uint8_t[size]()), size_(size) {}

  // A copy of `bytes`; the caller remains responsible for wiping its own buffer.
  static SecretBytes CopyOf(std::span<const std::uint8_t> bytes) {
    SecretBytes secret(bytes.size());
    if (!bytes.empty()) std::copy(bytes.begin(), bytes.end(), secret.bytes_.get());
    return secret;
  }

  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  SecretBytes(SecretBytes&& other) noexcept
      : bytes_(std::move(other.bytes_)), size_(std::exchange(other.size_, 0)) {}
  SecretBytes& operator=(SecretBytes&& other) noexcept {
    if (this != &other) {
      Wipe();
      bytes_ = std::move(other.bytes_);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  // Moving the pointer hands the bytes over without copying them, so nothing is left
  // in `other` to wipe; the destructor wipes what this object owns.
  ~SecretBytes() { Wipe(); }

  // An explicit copy, for the rare caller that needs the same key twice.
  SecretBytes Clone() const { return CopyOf(span()); }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const std::uint8_t* data() const { return bytes_.get(); }
  std::span<const std::uint8_t> span() const { return {bytes_.get(), size_}; }
  std::span<std::uint8_t> mutable_span() { return {bytes_.get(), size_}; }

  // Equal length and equal bytes, in time that depends only on the length.
  bool ConstantTimeEquals(const SecretBytes& other) const {
    if (size_ != other.size_) return false;
    if (size_ == 0) return true;
    return sodium_memcmp(bytes_.get(), other.bytes_.get(), size_) == 0;
  }

  // Deleted so that `std::cout << key` and gtest's printer fail to compile.
  friend std::ostream& operator<<(std::ostream&, const SecretBytes&) = delete;

 private:
  void Wipe() {
    if (bytes_ != nullptr) sodium_memzero(bytes_.get(), size_);
    bytes_.reset();
    size_ = 0;
  }

  std::unique_ptr<std::uint8_t[]> bytes_;
  std::size_t size_ = 0;
};

}  // namespace cohort::crypto
