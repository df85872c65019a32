#include "training/dp_sgd.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "privacy/budget.h"
#include "privacy/rdp_accountant.h"

namespace cohort::training {

int64_t StepsPerRound(const core::TrainingConfig& training, size_t num_examples) {
  const int64_t n = static_cast<int64_t>(num_examples);
  const int64_t batch = std::max<int64_t>(1, std::min<int64_t>(training.batch_size, n));
  int64_t steps = (n + batch - 1) / batch * training.local_epochs;
  if (training.max_steps_per_round > 0) steps = std::min(steps, training.max_steps_per_round);
  return steps;
}

absl::StatusOr<DpSgdSpend> PlanDpSgdRound(const core::PrivacyConfig& privacy, const core::TrainingConfig& training,
                                          size_t num_examples, uint64_t total_rounds) {
  if (privacy.mechanism != "dp_sgd") {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy.mechanism: expected \"dp_sgd\" to plan a DP-SGD round, got \"", privacy.mechanism, "\""));
  }
  if (training.max_grad_norm > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "training_config.max_grad_norm: expected 0 with privacy.mechanism \"dp_sgd\" (it clips each example's "
        "gradient to privacy.clip_norm instead), got ",
        training.max_grad_norm));
  }
  if (num_examples == 0) return absl::InvalidArgumentError("DP-SGD needs at least one training example, got 0");
  if (total_rounds == 0) return absl::InvalidArgumentError("federation.rounds: expected an integer >= 1, got 0");
  if (absl::Status s = privacy::ValidatePrivacyBudget({privacy.target_epsilon, privacy.target_delta}); !s.ok()) {
    return s;
  }
  if (absl::Status s = privacy::ValidateClipNorm(privacy.clip_norm, "privacy.clip_norm"); !s.ok()) return s;

  DpSgdSpend spend;
  const double n = static_cast<double>(num_examples);
  spend.sampling_rate = std::min(1.0, static_cast<double>(training.batch_size) / n);
  spend.expected_batch_size = spend.sampling_rate * n;
  spend.steps = StepsPerRound(training, num_examples);
  spend.clip_norm = privacy.clip_norm;
  if (absl::Status s = privacy::ValidateSamplingRate(spend.sampling_rate, "sampling rate (batch_size / examples)");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = privacy::ValidateSteps(spend.steps, "steps per round"); !s.ok()) return s;
  const int64_t job_steps = spend.steps * static_cast<int64_t>(total_rounds);

  if (privacy.noise_multiplier > 0) {
    if (absl::Status s = privacy::ValidateNoiseMultiplier(privacy.noise_multiplier, "privacy.noise_multiplier");
        !s.ok()) {
      return s;
    }
    spend.noise_multiplier = privacy.noise_multiplier;
    absl::StatusOr<privacy::EpsilonResult> eps =
        privacy::ComputeEpsilon(spend.sampling_rate, spend.noise_multiplier, job_steps, privacy.target_delta);
    if (!eps.ok()) return eps.status();
    spend.job_epsilon = eps->epsilon;
    return spend;
  }
  absl::StatusOr<privacy::NoiseResult> noise =
      privacy::NoiseMultiplierFor(privacy.target_epsilon, privacy.target_delta, spend.sampling_rate, job_steps);
  if (!noise.ok()) {
    return absl::Status(noise.status().code(),
                        absl::StrCat("privacy.target_epsilon: no noise multiplier meets epsilon ",
                                     privacy::FormatNumber(privacy.target_epsilon), " at delta ",
                                     privacy::FormatNumber(privacy.target_delta), " over ", job_steps, " steps (",
                                     total_rounds, " rounds) at sampling rate ",
                                     privacy::FormatNumber(spend.sampling_rate), ": ",
                                     std::string(noise.status().message())));
  }
  spend.noise_multiplier = noise->noise_multiplier;
  spend.job_epsilon = noise->epsilon;
  return spend;
}

privacy::SpendRequest SpendRequestFor(const DpSgdSpend& spend, std::string job, int64_t round) {
  privacy::SpendRequest request;
  request.job = std::move(job);
  request.round = round;
  request.mechanism = privacy::Mechanism::kDpSgd;
  request.sampling_rate = spend.sampling_rate;
  request.noise_multiplier = spend.noise_multiplier;
  request.steps = spend.steps;
  request.clip_norm = spend.clip_norm;
  return request;
}

}  // namespace cohort::training
