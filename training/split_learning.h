#pragma once
// Split learning: each party of a vertical job trains a bottom model on its own columns;
// the party holding the labels also trains the top model on the concatenated bottom
// outputs, and returns to every party the gradient of the loss with respect to its bottom
// output. Composed, the parts are one model: with the same initial weights and batches,
// the parts' gradients and updated weights equal those of the composed model trained in
// one place (tested to 1e-5).
//
// No LibTorch type crosses this header: batches, outputs and gradients are row-major
// float buffers; parameters are core::ParameterSet in the model's manifest order.
// Optimizers, learning-rate schedule and gradient clipping follow core::TrainingConfig
// (one optimizer per part, stepping once per batch; the schedule's step is the part's own
// count of steps, the same at every part). training.max_grad_norm clips each part's
// gradient on its own, by the norm over that part's parameters: no party sees another's
// gradient, so the composed model's global norm is not available; without clipping (and
// with any of sgd, adam, adamw, whose updates are per parameter) the parts step exactly
// as the composed model would. SetParameters replaces weights and keeps optimizer state.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "core/parameter_set.h"
#include "training/model_spec.h"

namespace cohort::training {

// One party's bottom model. Its ModelSpec's input_shape is the party's feature shape; its
// output, flattened per row, has output_size() values. A bottom spec has num_classes 0 or
// the size of its last layer; no softmax is applied to it.
class BottomModel {
 public:
  // `total_steps` (batches over the whole job) drives the learning-rate schedule.
  static absl::StatusOr<std::unique_ptr<BottomModel>> Create(const ModelSpec& spec,
                                                             const core::TrainingConfig& training,
                                                             int64_t total_steps, uint64_t seed);
  ~BottomModel();
  int64_t output_size() const;

  // Outputs for `rows` rows of `batch` (rows * input size values). With `train`, the graph
  // is kept for the Backward that must follow; without, nothing is kept (evaluation).
  absl::StatusOr<std::vector<float>> Forward(std::span<const float> batch, int64_t rows, bool train);
  // Backpropagates d loss / d output (rows * output_size() values, for the last training
  // Forward) and takes one optimizer step.
  absl::Status Backward(std::span<const float> grad_output);

  absl::StatusOr<core::ParameterSet> Parameters() const;
  absl::Status SetParameters(const core::ParameterSet& parameters);
  // The state dict as model.pt (torch.load(..., weights_only=True) reads it).
  absl::Status Save(const std::filesystem::path& path) const;

 private:
  struct Impl;
  explicit BottomModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The label party's top model and loss (cross-entropy). Its ModelSpec's input_shape is
// {sum of the bottom output sizes}, in party order.
class TopModel {
 public:
  static absl::StatusOr<std::unique_ptr<TopModel>> Create(const ModelSpec& spec,
                                                          const core::TrainingConfig& training,
                                                          int64_t total_steps, uint64_t seed);
  ~TopModel();

  struct StepResult {
    double loss = 0;      // mean over the batch
    int64_t correct = 0;  // argmax == label
    // d loss / d part, one buffer per part, each the part's size.
    std::vector<std::vector<float>> part_gradients;
  };
  // `parts[i]` holds rows * part_sizes[i] values (bottom outputs, party order). Forward,
  // loss, backward, one optimizer step; InvalidArgument when a size does not match.
  absl::StatusOr<StepResult> TrainStep(std::span<const std::span<const float>> parts,
                                       std::span<const int64_t> part_sizes, std::span<const int64_t> labels);

  struct EvalResult {
    double loss_sum = 0;
    int64_t correct = 0;
    int64_t rows = 0;
  };
  absl::StatusOr<EvalResult> Evaluate(std::span<const std::span<const float>> parts,
                                      std::span<const int64_t> part_sizes, std::span<const int64_t> labels);

  absl::StatusOr<core::ParameterSet> Parameters() const;
  absl::Status SetParameters(const core::ParameterSet& parameters);
  absl::Status Save(const std::filesystem::path& path) const;

 private:
  struct Impl;
  explicit TopModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Label protection: adds N(0, stddev^2) to every gradient value returned to a feature
// party, from a generator seeded by (seed, step, party) so a run is reproducible. The
// seed must be the label party's own secret, not a seed every party knows: a party that
// can recompute the noise can subtract it. Nothing for stddev <= 0.
void AddGradientNoise(std::span<float> gradients, double stddev, uint64_t seed, uint64_t step, uint64_t party);

}  // namespace cohort::training
