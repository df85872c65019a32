#pragma once
// Learning rate at a global optimizer step: linear warmup over `warmup_steps` (step s < W
// gets learning_rate * (s + 1) / W, so the first step already moves),
// then constant, cosine or linear decay to `min_learning_rate` at `total_steps`. Steps
// count over the whole federated job (round r starts at (r - 1) * steps_per_round), so
// the schedule spans rounds the way it would span epochs in centralized training.
// "plateau" is constant here; its cuts come from PlateauSchedule, which the site's trainer
// keeps across rounds and multiplies in.

#include <cstddef>
#include <cstdint>
#include <optional>

#include "core/job_config.h"

namespace cohort::training {

double LearningRateAt(const core::TrainingConfig& config, int64_t step, int64_t total_steps);

// Where one round's optimizer steps lie in the job's schedule.
struct RoundSteps {
  int64_t first_step = 0;   // global index of the round's first step
  int64_t steps = 0;        // optimizer steps this round
  int64_t total_steps = 0;  // of the whole job: where decay ends
};
// With max_steps: round r (1-based) of R runs steps [floor(M (r-1) / R), floor(M r / R)).
// Without: every round takes ceil(batches per epoch * local_epochs / accumulation) steps,
// capped by max_steps_per_round.
RoundSteps StepsOfRound(const core::TrainingConfig& config, size_t num_examples, uint64_t round,
                        uint64_t total_rounds);

// lr_scheduler "plateau" (as PyTorch's ReduceLROnPlateau in "min" mode, threshold 1e-4
// relative): after `plateau_patience` rounds in a row whose held-out loss did not improve on
// the best seen, the factor is multiplied by `plateau_factor`. One per site, across rounds.
class PlateauSchedule {
 public:
  explicit PlateauSchedule(const core::TrainingConfig& config)
      : reduce_by_(config.plateau_factor), patience_(config.plateau_patience) {}
  // Multiplies learning_rate (and min_learning_rate is no floor: the factor only falls).
  double factor() const { return factor_; }
  // The loss measured after a round (NaN or infinite counts as no improvement).
  void Observe(double loss);

 private:
  double reduce_by_;
  int64_t patience_;
  double factor_ = 1.0;
  std::optional<double> best_;
  int64_t bad_rounds_ = 0;
};

}  // namespace cohort::training
