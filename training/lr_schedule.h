#pragma once
// Learning rate at a global optimizer step: linear warmup over `warmup_steps` (step s < W
// gets learning_rate * (s + 1) / W, so the first step already moves),
// then constant, cosine or linear decay to `min_learning_rate` at `total_steps`. Steps
// count over the whole federated job (round r starts at (r - 1) * steps_per_round), so
// the schedule spans rounds the way it would span epochs in centralized training.

#include <cstdint>

#include "core/job_config.h"

namespace cohort::training {

double LearningRateAt(const core::TrainingConfig& config, int64_t step, int64_t total_steps);

}  // namespace cohort::training
