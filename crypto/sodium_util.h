#pragma once
// Internal to crypto/: libsodium must be initialised once before its random number
// generator or its primitives are used. sodium_init is thread-safe and idempotent;
// the function-local static makes the check free after the first call.

#include <sodium.h>

#include <cstdlib>

namespace cohort::crypto::internal {

inline void EnsureSodiumInitialized() {
  static const bool initialized = [] {
    // -1 means the library could not initialise (no usable entropy source): no key
    // or nonce can be made safely, so stop rather than continue without randomness.
    if (sodium_init() < 0) std::abort();
    return true;
  }();
  (void)initialized;
}

}  // namespace cohort::crypto::internal
