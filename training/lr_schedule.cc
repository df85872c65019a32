#include "training/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace cohort::training {

double LearningRateAt(const core::TrainingConfig& c, int64_t step, int64_t total_steps) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) {
    return c.learning_rate * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.lr_scheduler == "constant") return c.learning_rate;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - c.warmup_steps);
  const double progress =
      std::clamp(static_cast<double>(step - c.warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  const double factor =
      c.lr_scheduler == "cosine" ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : 1.0 - progress;
  return c.min_learning_rate + (c.learning_rate - c.min_learning_rate) * factor;
}

}  // namespace cohort::training
