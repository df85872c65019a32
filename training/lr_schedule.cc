#include "training/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace cohort::training {

double LearningRateAt(const core::TrainingConfig& c, int64_t step, int64_t total_steps) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) {
    return c.learning_rate * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.lr_scheduler == "constant" || c.lr_scheduler == "plateau") return c.learning_rate;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - c.warmup_steps);
  const double progress =
      std::clamp(static_cast<double>(step - c.warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  const double factor =
      c.lr_scheduler == "cosine" ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : 1.0 - progress;
  return c.min_learning_rate + (c.learning_rate - c.min_learning_rate) * factor;
}

RoundSteps StepsOfRound(const core::TrainingConfig& c, size_t num_examples, uint64_t round, uint64_t total_rounds) {
  RoundSteps out;
  const int64_t r = static_cast<int64_t>(std::max<uint64_t>(round, 1));
  const int64_t rounds = static_cast<int64_t>(std::max<uint64_t>(total_rounds, 1));
  if (c.max_steps > 0) {
    // 128-bit products: max_steps and rounds are each below 2^31.
    const auto boundary = [&](int64_t k) {
      return static_cast<int64_t>(static_cast<__int128>(c.max_steps) * std::min(k, rounds) / rounds);
    };
    out.first_step = boundary(r - 1);
    out.steps = boundary(r) - out.first_step;
    out.total_steps = c.max_steps;
    return out;
  }
  const int64_t n = static_cast<int64_t>(num_examples);
  const int64_t batch = std::max<int64_t>(1, std::min<int64_t>(c.batch_size, n));
  const int64_t batches = (n + batch - 1) / batch * c.local_epochs;
  const int64_t accumulate = std::max<int64_t>(1, c.gradient_accumulation_steps);
  out.steps = (batches + accumulate - 1) / accumulate;
  if (c.max_steps_per_round > 0) out.steps = std::min(out.steps, c.max_steps_per_round);
  out.first_step = out.steps * (r - 1);
  out.total_steps = out.steps * rounds;
  return out;
}

void PlateauSchedule::Observe(double loss) {
  const bool improved = std::isfinite(loss) && (!best_ || loss < *best_ * (1 - 1e-4));
  if (improved) {
    best_ = loss;
    bad_rounds_ = 0;
    return;
  }
  if (++bad_rounds_ > patience_) {
    factor_ *= reduce_by_;
    bad_rounds_ = 0;
  }
}

}  // namespace cohort::training
