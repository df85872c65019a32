#pragma once
// DP-SGD for local training: what a round spends, known before it trains. No LibTorch here,
// so the client agent can plan a round, ask its privacy ledger, and only then train.
//
// The mechanism (Abadi et al. 2016, "Deep Learning with Differential Privacy"), as
// LocalTrainer::TrainRound runs it under privacy.mechanism "dp_sgd":
//   - each step draws its batch by Poisson sampling: every example of the site independently
//     with probability q = batch_size / N (so batch sizes vary, mean batch_size);
//   - each example's gradient (of its own loss) is clipped to L2 norm C = privacy.clip_norm,
//     over all parameters together; the clipped gradients are summed;
//   - N(0, (sigma * C)^2) is added to every coordinate of the sum, which is then divided by
//     the expected batch size q * N (not the drawn one, which would leak it);
//   - the configured optimizer steps on that gradient (momentum, Adam, weight decay and the
//     learning-rate schedule are post-processing and cost no privacy).
// Steps per round are ceil(N / batch_size) * local_epochs, capped by max_steps_per_round,
// the same count as without DP. privacy::RdpAccountant accounts exactly this mechanism:
// `steps` compositions at (q, sigma). Sampling and noise draw from a generator seeded from the
// OS's secure randomness, never from the job seed: an observer who could replay them would
// learn which examples were used and what the noise hid.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "privacy/ledger_format.h"

namespace cohort::training {

// One round's DP-SGD spend on one site.
struct DpSgdSpend {
  double sampling_rate = 0.0;     // q = min(1, batch_size / N)
  double noise_multiplier = 0.0;  // sigma: privacy.noise_multiplier, or calibrated to the budget
  int64_t steps = 0;              // noisy steps this round
  double clip_norm = 0.0;         // C
  double expected_batch_size = 0.0;  // q * N, the divisor of the noised sum
  // Epsilon (at privacy.target_delta) of total_rounds such rounds and nothing else; with a
  // calibrated sigma this is at most target_epsilon. The ledger, which also holds other jobs'
  // spends on the same data, has the last word.
  double job_epsilon = 0.0;
};

// Optimizer steps of one round on `num_examples` examples (with DP or without).
int64_t StepsPerRound(const core::TrainingConfig& training, size_t num_examples);

// The spend of each round of a dp_sgd job with `total_rounds` rounds, for a site with
// `num_examples` training examples. Every round of the job spends the same. When
// privacy.noise_multiplier is 0, sigma is the smallest that keeps total_rounds rounds within
// (target_epsilon, target_delta) (privacy::NoiseMultiplierFor): the whole budget goes to this
// job, as if the site trained in every round. Errors: InvalidArgument for a mechanism other
// than dp_sgd, training_config.max_grad_norm > 0, no examples, or a bad value (named as in the
// job config); OutOfRange when no noise multiplier up to privacy::kMaxNoiseMultiplier meets
// the budget.
absl::StatusOr<DpSgdSpend> PlanDpSgdRound(const core::PrivacyConfig& privacy, const core::TrainingConfig& training,
                                          size_t num_examples, uint64_t total_rounds);

// The ledger entry for `spend` in round `round` of job `job`.
privacy::SpendRequest SpendRequestFor(const DpSgdSpend& spend, std::string job, int64_t round);

}  // namespace cohort::training
