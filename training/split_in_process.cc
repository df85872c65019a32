#include "training/split_in_process.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "training/split_learning.h"

namespace cohort::training {
namespace {

// The features of `rows` of `table`, back to back.
void GatherFeatures(const VerticalTable& table, std::span<const size_t> rows, std::vector<float>* out) {
  const size_t width = table.feature_size();
  out->resize(rows.size() * width);
  for (size_t r = 0; r < rows.size(); ++r) {
    std::copy_n(table.features.begin() + static_cast<std::ptrdiff_t>(rows[r] * width), width,
                out->begin() + static_cast<std::ptrdiff_t>(r * width));
  }
}

struct Parties {
  std::vector<std::unique_ptr<BottomModel>> bottoms;
  std::unique_ptr<TopModel> top;
  std::vector<int64_t> output_sizes;
};

absl::Status CheckTables(const std::vector<VerticalTable>& tables, size_t label_party,
                         const std::vector<ModelSpec>& bottoms) {
  if (tables.size() < 2 || tables.size() != bottoms.size()) {
    return absl::InvalidArgumentError(absl::StrCat("split training: expected one bottom model per table and at least 2 "
                                                   "tables, got ", tables.size(), " tables and ", bottoms.size(),
                                                   " bottom models"));
  }
  if (label_party >= tables.size() || !tables[label_party].has_labels()) {
    return absl::InvalidArgumentError(absl::StrCat("split training: table ", label_party, " (the label party) has no labels"));
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    if (tables[i].identifiers != tables[0].identifiers) {
      return absl::InvalidArgumentError(absl::StrCat("split training: table ", i, " is not aligned with table 0 "
                                                     "(different identifiers or order); align them first"));
    }
    if (tables[i].feature_shape != bottoms[i].input_shape) {
      return absl::InvalidArgumentError(absl::StrCat("split training: table ", i, " has features of shape [",
                                                     absl::StrJoin(tables[i].feature_shape, ", "), "] but bottom model ",
                                                     bottoms[i].name, " expects input_shape [",
                                                     absl::StrJoin(bottoms[i].input_shape, ", "), "]"));
    }
  }
  if (tables[0].rows() < 2) return absl::InvalidArgumentError("split training: fewer than 2 aligned rows");
  return absl::OkStatus();
}

// Runs `rows` through every bottom (training or not) and returns the outputs, party order.
absl::StatusOr<std::vector<std::vector<float>>> ForwardBottoms(Parties& parties,
                                                               const std::vector<VerticalTable>& tables,
                                                               std::span<const size_t> rows, bool train,
                                                               std::vector<float>* scratch) {
  std::vector<std::vector<float>> outputs;
  for (size_t p = 0; p < tables.size(); ++p) {
    GatherFeatures(tables[p], rows, scratch);
    absl::StatusOr<std::vector<float>> out =
        parties.bottoms[p]->Forward(*scratch, static_cast<int64_t>(rows.size()), train);
    if (!out.ok()) return out.status();
    outputs.push_back(std::move(*out));
  }
  return outputs;
}

std::vector<std::span<const float>> Spans(const std::vector<std::vector<float>>& buffers) {
  return std::vector<std::span<const float>>(buffers.begin(), buffers.end());
}

absl::StatusOr<TopModel::EvalResult> EvaluateRows(Parties& parties, const std::vector<VerticalTable>& tables,
                                                  size_t label_party, const std::vector<size_t>& rows,
                                                  int64_t batch_size) {
  TopModel::EvalResult total;
  std::vector<float> scratch;
  std::vector<int64_t> labels;
  for (size_t begin = 0; begin < rows.size(); begin += static_cast<size_t>(batch_size)) {
    const std::span<const size_t> batch(rows.data() + begin, std::min(rows.size() - begin, static_cast<size_t>(batch_size)));
    absl::StatusOr<std::vector<std::vector<float>>> outputs = ForwardBottoms(parties, tables, batch, false, &scratch);
    if (!outputs.ok()) return outputs.status();
    labels.clear();
    for (size_t r : batch) labels.push_back(tables[label_party].labels[r]);
    const std::vector<std::span<const float>> parts = Spans(*outputs);
    absl::StatusOr<TopModel::EvalResult> e = parties.top->Evaluate(parts, parties.output_sizes, labels);
    if (!e.ok()) return e.status();
    total.loss_sum += e->loss_sum;
    total.correct += e->correct;
    total.rows += e->rows;
  }
  return total;
}

}  // namespace

absl::StatusOr<SplitInProcessResult> TrainSplitInProcess(const std::vector<VerticalTable>& tables,
                                                         size_t label_party, const std::vector<ModelSpec>& bottoms,
                                                         const ModelSpec& top, const SplitInProcessOptions& options) {
  if (absl::Status s = CheckTables(tables, label_party, bottoms); !s.ok()) return s;
  const core::TrainingConfig& training = options.training;
  const AlignedSplit split = SplitAlignedRows(tables[0].rows(), options.eval_fraction, options.seed);
  if (split.train.empty()) return absl::InvalidArgumentError("split training: eval_fraction leaves no training rows");
  const int64_t batch_size = std::max<int64_t>(1, std::min<int64_t>(training.batch_size, split.train.size()));
  const int64_t steps_per_epoch = (static_cast<int64_t>(split.train.size()) + batch_size - 1) / batch_size;
  const int64_t total_steps = std::max<int64_t>(1, steps_per_epoch * options.epochs);

  Parties parties;
  for (size_t p = 0; p < bottoms.size(); ++p) {
    absl::StatusOr<std::unique_ptr<BottomModel>> bottom =
        BottomModel::Create(bottoms[p], training, total_steps, options.seed + p);
    if (!bottom.ok()) return bottom.status();
    parties.output_sizes.push_back((*bottom)->output_size());
    parties.bottoms.push_back(std::move(*bottom));
  }
  absl::StatusOr<std::unique_ptr<TopModel>> top_model =
      TopModel::Create(top, training, total_steps, options.seed + bottoms.size());
  if (!top_model.ok()) return top_model.status();
  parties.top = std::move(*top_model);

  SplitInProcessResult result;
  result.train_rows = static_cast<int64_t>(split.train.size());
  result.eval_rows = static_cast<int64_t>(split.eval.size());
  std::vector<float> scratch;
  std::vector<size_t> batch_rows;
  std::vector<int64_t> labels;
  double train_seconds = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const auto started = std::chrono::steady_clock::now();
    const std::vector<size_t> order = EpochOrder(split.train.size(), options.seed, static_cast<uint64_t>(epoch));
    double loss_sum = 0;
    int64_t batches = 0;
    for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(batch_size)) {
      const size_t end = std::min(order.size(), begin + static_cast<size_t>(batch_size));
      batch_rows.clear();
      labels.clear();
      for (size_t i = begin; i < end; ++i) {
        batch_rows.push_back(split.train[order[i]]);
        labels.push_back(tables[label_party].labels[batch_rows.back()]);
      }
      absl::StatusOr<std::vector<std::vector<float>>> outputs =
          ForwardBottoms(parties, tables, batch_rows, /*train=*/true, &scratch);
      if (!outputs.ok()) return outputs.status();
      const std::vector<std::span<const float>> parts = Spans(*outputs);
      absl::StatusOr<TopModel::StepResult> step = parties.top->TrainStep(parts, parties.output_sizes, labels);
      if (!step.ok()) return step.status();
      for (size_t p = 0; p < parties.bottoms.size(); ++p) {
        std::vector<float>& gradient = step->part_gradients[p];
        if (p != label_party) {
          AddGradientNoise(gradient, options.gradient_noise_std, options.seed, static_cast<uint64_t>(result.steps), p);
        }
        if (absl::Status s = parties.bottoms[p]->Backward(gradient); !s.ok()) return s;
      }
      loss_sum += step->loss;
      ++batches;
      ++result.steps;
    }
    train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    result.last_epoch_train_loss = batches > 0 ? loss_sum / static_cast<double>(batches) : 0;
    const bool last = epoch + 1 == options.epochs;
    if ((options.evaluate_each_epoch || last) && !split.eval.empty()) {
      absl::StatusOr<TopModel::EvalResult> e =
          EvaluateRows(parties, tables, label_party, split.eval, std::max<int64_t>(1, training.eval_batch_size));
      if (!e.ok()) return e.status();
      const double accuracy = static_cast<double>(e->correct) / static_cast<double>(e->rows);
      if (options.evaluate_each_epoch) result.epoch_eval_accuracy.push_back(accuracy);
      if (last) {
        result.eval_accuracy = accuracy;
        result.eval_loss = e->loss_sum / static_cast<double>(e->rows);
      }
    }
  }
  result.train_seconds = train_seconds;
  return result;
}

}  // namespace cohort::training
