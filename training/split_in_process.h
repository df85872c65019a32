#pragma once
// Split learning with every party in one process: the bottoms and the top called directly,
// batches cut from tables already aligned (row i of every table is the same person). The
// same per-batch exchange a vertical job makes over the network, without the network: the
// baseline the networked run is compared with, and how model configs are tuned.
// No LibTorch type crosses this header; it goes through split_learning.h only.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "training/model_spec.h"
#include "training/vertical_data.h"

namespace cohort::training {

struct SplitInProcessOptions {
  core::TrainingConfig training;  // optimizer, learning rate, schedule, batch size for every part
  int64_t epochs = 10;
  double eval_fraction = 0.2;     // SplitAlignedRows(rows, eval_fraction, seed)
  uint64_t seed = 0;              // initial weights (seed + part index), split and batch order
  double gradient_noise_std = 0;  // AddGradientNoise on the gradients of non-label parties
  bool evaluate_each_epoch = false;  // fills epoch_eval_accuracy
};

struct SplitInProcessResult {
  int64_t train_rows = 0, eval_rows = 0, steps = 0;
  double last_epoch_train_loss = 0;  // mean over the last epoch's batches
  double eval_loss = 0, eval_accuracy = 0;  // after the last epoch
  std::vector<double> epoch_eval_accuracy;  // with evaluate_each_epoch
  double train_seconds = 0;          // training only, evaluation excluded
};

// `tables[i]` is party i's aligned table, `bottoms[i]` its bottom model; tables[label_party]
// holds the labels. InvalidArgument when the tables disagree on their rows, a table's
// feature shape is not its bottom's input_shape, or the top's input is not the sum of the
// bottom outputs.
absl::StatusOr<SplitInProcessResult> TrainSplitInProcess(const std::vector<VerticalTable>& tables,
                                                         size_t label_party, const std::vector<ModelSpec>& bottoms,
                                                         const ModelSpec& top, const SplitInProcessOptions& options);

}  // namespace cohort::training
