#pragma once
// The training layer's narrow interface. Callers (client, server evaluation, cli) pass
// parameter sets and data sets in and get parameter sets and metrics out; no LibTorch type
// crosses this header, and LibTorch exceptions are converted to absl::Status inside.

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "training/dataset.h"
#include "training/dp_sgd.h"
#include "training/model_spec.h"

namespace cohort::training {

struct RoundResult {
  core::ParameterSet delta;  // trained - global, in the model's manifest order
  core::TrainMetrics metrics;
  // What the round spent of the site's privacy budget, under privacy.mechanism "dp_sgd";
  // equal to PlanDpSgdRound's plan for the same inputs. Empty without DP-SGD.
  std::optional<DpSgdSpend> dp_sgd;
};

// Trains one site's model, round after round, on its own data.
class LocalTrainer {
 public:
  // `seed` fixes batch order and dropout; `train` and `eval` must match spec.input_shape.
  static absl::StatusOr<std::unique_ptr<LocalTrainer>> Create(const ModelSpec& spec, Dataset train, Dataset eval,
                                                              uint64_t seed);
  ~LocalTrainer();
  LocalTrainer(const LocalTrainer&) = delete;
  LocalTrainer& operator=(const LocalTrainer&) = delete;

  // Loads `global`, trains `config.local_epochs` epochs (or max_steps_per_round steps)
  // with a fresh optimizer, evaluates on the held-out split, and returns the delta.
  // With privacy.mechanism "dp_sgd" every step is a DP-SGD step (training/dp_sgd.h) and the
  // result says what was spent; the caller records that in the site's ledger, having checked
  // PlanDpSgdRound against it before calling. A model with a layer DP-SGD cannot handle is
  // refused (InvalidArgument naming model_config.layers[i]). Other mechanisms train as
  // without privacy: client-level DP acts on the update, not here.
  absl::StatusOr<RoundResult> TrainRound(const core::ParameterSet& global, const core::TrainingConfig& config,
                                         uint64_t round, uint64_t total_rounds,
                                         const core::PrivacyConfig& privacy = {});
  size_t num_train_examples() const;

 private:
  struct Impl;
  explicit LocalTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Mean cross-entropy and accuracy of `parameters` on `data`.
absl::StatusOr<core::EvalMetrics> Evaluate(const ModelSpec& spec, const core::ParameterSet& parameters,
                                           const Dataset& data, int64_t batch_size = 1000);

// LibTorch's default initialization of the model, reproducible for a seed.
absl::StatusOr<core::ParameterSet> InitialParameters(const ModelSpec& spec, uint64_t seed);

// Sets LibTorch's intra-op thread count for this process.
void SetTrainingThreads(int threads);

}  // namespace cohort::training
