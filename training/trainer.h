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
#include "training/evaluation.h"
#include "training/model_spec.h"

namespace cohort::training {

struct RoundResult {
  core::ParameterSet delta;  // trained - global, in the model's manifest order
  core::TrainMetrics metrics;
  // What the round spent of the site's privacy budget, under privacy.mechanism "dp_sgd";
  // equal to PlanDpSgdRound's plan for the same inputs. Empty without DP-SGD.
  std::optional<DpSgdSpend> dp_sgd;
};

class Collective;  // training/data_parallel.h

struct TrainerOptions {
  // Overrides training_config.device when not empty (`cohort client --device`).
  std::string device;
  // Data parallelism: this site's worker group (training/data_parallel.h), which must outlive
  // the trainer. Null: this process trains alone. With a group of W workers, every worker
  // holds the same training rows and seed, walks the same batches, and computes the gradient
  // of its shard (training::ShardOf) of each batch scaled by 1 / (whole batch size); the sum
  // over workers is then exactly the whole batch's mean gradient, also when shards are
  // unequal, so every worker takes the step one worker would take alone. Under DP-SGD each
  // worker clips its own examples before the sum, worker 0 draws each step's Poisson sample
  // seed (shared by broadcast) and adds the noise, once. Worker 0 (the one that talks to the
  // server) calls TrainRound, which first sends the round's order and the global model to the
  // others (RunFollower); its destructor tells them to stop.
  Collective* group = nullptr;
  // Tests only: DP-SGD's sampling seeds and noise come from this seed instead of the OS's
  // secure randomness, so that two runs can be compared. Never set it where privacy matters:
  // whoever knows it can subtract the noise.
  std::optional<uint64_t> dp_sgd_seed_for_tests;
  // Workers 1..W-1 of a LoRA job: this worker's copy of the base model (`cohort client
  // --base-model`); empty: the file worker 0 read. Checked against the job's digest.
  std::string lora_base_model;
};

// Trains one site's model, round after round, on its own data.
class LocalTrainer {
 public:
  // `seed` fixes batch order and dropout; `train` and `eval` must match spec.input_shape.
  // With options.group, worker 0 sends the model spec and the number of training rows to the
  // others here, so every worker must be running RunFollower (or fail).
  static absl::StatusOr<std::unique_ptr<LocalTrainer>> Create(const ModelSpec& spec, Dataset train, Dataset eval,
                                                              uint64_t seed, TrainerOptions options = {});
  ~LocalTrainer();
  LocalTrainer(const LocalTrainer&) = delete;
  LocalTrainer& operator=(const LocalTrainer&) = delete;

  // Loads `global`, trains `config.local_epochs` epochs (or max_steps_per_round steps, or
  // this round's share of max_steps: training/lr_schedule.h StepsOfRound) with a fresh
  // optimizer, evaluates on the held-out split, and returns the delta. With lr_scheduler
  // "plateau" the held-out loss of each round feeds this trainer's PlateauSchedule.
  // With privacy.mechanism "dp_sgd" every step is a DP-SGD step (training/dp_sgd.h) and the
  // result says what was spent; the caller records that in the site's ledger, having checked
  // PlanDpSgdRound against it before calling. A model with a layer DP-SGD cannot handle is
  // refused (InvalidArgument naming model_config.layers[i]). Other mechanisms train as
  // without privacy: client-level DP acts on the update, not here.
  //
  // `global` is taken by value and becomes the returned delta in place (trained - global,
  // written over it): a caller that no longer needs the model moves it in, and the round
  // then holds no model-sized buffer beyond the module's parameters and gradients (which
  // are released when training ends). A caller that keeps it passes a copy.
  absl::StatusOr<RoundResult> TrainRound(core::ParameterSet global, const core::TrainingConfig& config,
                                         uint64_t round, uint64_t total_rounds,
                                         const core::PrivacyConfig& privacy = {});
  size_t num_train_examples() const;
  // The device the model lives on ("cpu", "cuda:0"); empty before the first round.
  std::string device() const;

 private:
  struct Impl;
  explicit LocalTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Workers 1..W-1 of a data-parallel site (options.group set, rank > 0): receives the model
// spec from worker 0's LocalTrainer::Create, then trains every round worker 0 orders, until it
// stops the group (OK) or the group fails (the collective's error). `train` must be the same
// rows as worker 0's; `seed` the same seed.
absl::Status RunFollower(Dataset train, uint64_t seed, TrainerOptions options);

// LibTorch's default initialization of the model, reproducible for a seed.
absl::StatusOr<core::ParameterSet> InitialParameters(const ModelSpec& spec, uint64_t seed);

// Sets LibTorch's intra-op thread count for this process.
void SetTrainingThreads(int threads);

}  // namespace cohort::training
