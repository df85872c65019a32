#pragma once
// Client-level DP on flat float buffers (a model update laid out as one
// contiguous array): L2 norm, clipping, Gaussian noise, and adaptive
// clipping. The caller maps parameter sets onto spans; nothing here knows
// about tensors.
//
// Where noise comes from: NoiseSource draws from a ChaCha20 keystream
// (libsodium crypto_stream_chacha20, a counter-based generator) keyed with 32
// bytes from the OS CSPRNG (randombytes_buf). Noise that an observer could
// predict gives no privacy, so a fixed seed exists only through the
// explicitly named ForTesting constructor. Normals come from Box-Muller on
// 53-bit uniforms in double precision, then rounded to float.
//
// Thread safety: a NoiseSource is single-threaded state; give each thread its
// own. AdaptiveClipper likewise.

#include <array>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cohort::privacy {

// sqrt(sum x_i^2), accumulated in double. NaN/inf propagate.
double L2Norm(std::span<const float> values);

// Scales `values` so that its L2 norm is at most `bound` and returns the scale
// applied (1 when already within bound). InvalidArgument, leaving `values`
// untouched, when bound is not > 0 or the buffer holds a NaN or infinity (an
// update that cannot be clipped must be rejected, not forwarded).
absl::StatusOr<double> ClipToNorm(std::span<float> values, double bound);

class NoiseSource {
 public:
  // Keyed from the OS's secure randomness. Fails only if libsodium cannot
  // initialise.
  static absl::StatusOr<NoiseSource> FromOsEntropy();
  // Deterministic, for tests and reproducible experiments only: the noise is
  // predictable from the seed and so protects nothing.
  static NoiseSource ForTesting(uint64_t seed);

  // A uniform double in (0, 1], 53 random bits.
  double NextUniform();
  // A standard normal N(0, 1).
  double NextGaussian();

 private:
  explicit NoiseSource(const std::array<uint8_t, 32>& key);
  uint64_t NextBits();
  void Refill();

  static constexpr size_t kBufferWords = 512;  // 4 KiB of keystream per refill
  std::array<uint8_t, 32> key_;
  uint64_t block_counter_ = 0;  // nonce of the next refill; never reused
  std::array<uint64_t, kBufferWords> buffer_{};
  size_t next_word_ = kBufferWords;
  double spare_gaussian_ = 0.0;
  bool has_spare_ = false;
};

// Adds independent N(0, stddev^2) noise to every element. stddev == 0 is a
// no-op; InvalidArgument for stddev < 0 or non-finite.
absl::Status AddGaussianNoise(std::span<float> values, double stddev,
                              NoiseSource& noise);

// Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021,
// "Differentially Private Learning with Adaptive Clipping", NeurIPS): the
// clip bound C tracks the target quantile gamma of client update norms.
// Each round every participating client reports one bit, whether its update
// norm was <= C; the server adds N(0, count_stddev^2) to the sum of bits and
// updates C <- C * exp(-learning_rate * (noised_fraction - gamma)) (the
// geometric update of the paper). Sum-of-bits noise costs privacy too: with a
// total noise multiplier z for the round, the update sum must use
// UpdateNoiseMultiplier(z, count_stddev) so that both releases together are
// as private as one Gaussian release with multiplier z (paper, Thm. 1).
class AdaptiveClipper {
 public:
  struct Options {
    double initial_bound = 0.1;     // C_0 > 0
    double target_quantile = 0.5;   // gamma in [0, 1]
    double learning_rate = 0.2;     // eta_C > 0
    double count_stddev = 0.0;      // sigma_b >= 0 (the paper suggests m/20)
  };
  static absl::StatusOr<AdaptiveClipper> Create(const Options& options);

  double bound() const { return bound_; }
  // The client's bit.
  bool IsWithinBound(double update_norm) const { return update_norm <= bound_; }
  // Server side, once per round: `within_count` clients out of
  // `num_clients` (>= 1) reported a norm <= bound().
  absl::Status Update(int64_t within_count, int64_t num_clients,
                      NoiseSource& noise);

  // z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2). InvalidArgument when
  // count_stddev is too small to fit in z's budget (2 sigma_b <= z).
  static absl::StatusOr<double> UpdateNoiseMultiplier(
      double total_noise_multiplier, double count_stddev);

 private:
  explicit AdaptiveClipper(const Options& options);
  Options options_;
  double bound_;
};

}  // namespace cohort::privacy
