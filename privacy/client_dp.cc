#include "privacy/client_dp.h"

#include <sodium.h>

#include <cmath>
#include <cstring>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "privacy/budget.h"

namespace cohort::privacy {

double L2Norm(std::span<const float> values) {
  double sum = 0.0;
  for (float v : values) {
    const double d = v;
    sum += d * d;
  }
  return std::sqrt(sum);
}

absl::StatusOr<double> ClipToNorm(std::span<float> values, double bound) {
  if (absl::Status s = ValidateClipNorm(bound, "clip_norm"); !s.ok()) return s;
  const double norm = L2Norm(values);
  if (!std::isfinite(norm)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update: expected finite values, got a norm of ", FormatNumber(norm)));
  }
  if (norm <= bound) return 1.0;
  const double scale = bound / norm;
  for (float& v : values) v = static_cast<float>(v * scale);
  return scale;
}

absl::StatusOr<NoiseSource> NoiseSource::FromOsEntropy() {
  if (sodium_init() < 0) {
    return absl::InternalError("libsodium failed to initialise");
  }
  std::array<uint8_t, 32> key;
  randombytes_buf(key.data(), key.size());
  NoiseSource source(key);
  sodium_memzero(key.data(), key.size());
  return source;
}

NoiseSource NoiseSource::ForTesting(uint64_t seed) {
  std::array<uint8_t, 32> key{};
  for (int i = 0; i < 8; ++i) key[i] = static_cast<uint8_t>(seed >> (8 * i));
  return NoiseSource(key);
}

NoiseSource::NoiseSource(const std::array<uint8_t, 32>& key) : key_(key) {
  static_assert(crypto_stream_chacha20_KEYBYTES == 32);
  static_assert(crypto_stream_chacha20_NONCEBYTES == 8);
}

void NoiseSource::Refill() {
  // Each refill uses a fresh 64-bit nonce under the same key, so keystream
  // blocks never repeat.
  unsigned char nonce[crypto_stream_chacha20_NONCEBYTES];
  for (int i = 0; i < 8; ++i) {
    nonce[i] = static_cast<unsigned char>(block_counter_ >> (8 * i));
  }
  ++block_counter_;
  unsigned char bytes[kBufferWords * sizeof(uint64_t)];
  crypto_stream_chacha20(bytes, sizeof(bytes), nonce, key_.data());
  std::memcpy(buffer_.data(), bytes, sizeof(bytes));
  next_word_ = 0;
}

uint64_t NoiseSource::NextBits() {
  if (next_word_ == kBufferWords) Refill();
  return buffer_[next_word_++];
}

double NoiseSource::NextUniform() {
  // (k + 1) / 2^53 for k uniform in [0, 2^53): never 0, so log() is finite.
  return static_cast<double>((NextBits() >> 11) + 1) * 0x1.0p-53;
}

double NoiseSource::NextGaussian() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_gaussian_;
  }
  const double radius = std::sqrt(-2.0 * std::log(NextUniform()));
  const double angle = 2.0 * std::numbers::pi * NextUniform();
  spare_gaussian_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

absl::Status AddGaussianNoise(std::span<float> values, double stddev,
                              NoiseSource& noise) {
  if (!std::isfinite(stddev) || stddev < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "noise stddev: expected a number >= 0, got ", FormatNumber(stddev)));
  }
  if (stddev == 0) return absl::OkStatus();
  for (float& v : values) {
    v = static_cast<float>(v + stddev * noise.NextGaussian());
  }
  return absl::OkStatus();
}

absl::StatusOr<AdaptiveClipper> AdaptiveClipper::Create(const Options& options) {
  if (absl::Status s = ValidateClipNorm(options.initial_bound,
                                        "adaptive_clipping.initial_bound");
      !s.ok()) {
    return s;
  }
  if (!(options.target_quantile >= 0 && options.target_quantile <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("adaptive_clipping.target_quantile: expected a number in "
                     "[0, 1], got ",
                     FormatNumber(options.target_quantile)));
  }
  if (!std::isfinite(options.learning_rate) || options.learning_rate <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive_clipping.learning_rate: expected a number > 0, got ",
        FormatNumber(options.learning_rate)));
  }
  if (!std::isfinite(options.count_stddev) || options.count_stddev < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive_clipping.count_stddev: expected a number >= 0, got ",
        FormatNumber(options.count_stddev)));
  }
  return AdaptiveClipper(options);
}

AdaptiveClipper::AdaptiveClipper(const Options& options)
    : options_(options), bound_(options.initial_bound) {}

absl::Status AdaptiveClipper::Update(int64_t within_count, int64_t num_clients,
                                     NoiseSource& noise) {
  if (num_clients < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_clients: expected an integer >= 1, got ", num_clients));
  }
  if (within_count < 0 || within_count > num_clients) {
    return absl::InvalidArgumentError(
        absl::StrCat("within_count: expected an integer in [0, ", num_clients,
                     "], got ", within_count));
  }
  const double noised_count =
      static_cast<double>(within_count) +
      options_.count_stddev * noise.NextGaussian();
  const double fraction = noised_count / static_cast<double>(num_clients);
  bound_ *= std::exp(-options_.learning_rate *
                     (fraction - options_.target_quantile));
  return absl::OkStatus();
}

absl::StatusOr<double> AdaptiveClipper::UpdateNoiseMultiplier(
    double total_noise_multiplier, double count_stddev) {
  if (absl::Status s =
          ValidateNoiseMultiplier(total_noise_multiplier, "noise_multiplier");
      !s.ok()) {
    return s;
  }
  if (!std::isfinite(count_stddev) || count_stddev < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive_clipping.count_stddev: expected a number >= 0, got ",
        FormatNumber(count_stddev)));
  }
  if (count_stddev == 0) {
    return absl::InvalidArgumentError(
        "adaptive_clipping.count_stddev: expected a number > 0 when the clip "
        "count is released (an un-noised count is not private), got 0");
  }
  const double z = total_noise_multiplier;
  const double inverse_square =
      1.0 / (z * z) - 1.0 / (4.0 * count_stddev * count_stddev);
  if (inverse_square <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive_clipping.count_stddev: expected a number > ",
        FormatNumber(z / 2.0), " (half the noise multiplier) so the count "
        "noise fits in the round's budget, got ", FormatNumber(count_stddev)));
  }
  return 1.0 / std::sqrt(inverse_square);
}

}  // namespace cohort::privacy
