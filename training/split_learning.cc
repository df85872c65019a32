#include "training/split_learning.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "training/lr_schedule.h"
#include "training/state_dict_io.h"
#include "training/torch_model.h"

namespace cohort::training {
namespace {

int64_t ElementCount(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A copy of `values` as a tensor of `shape`: the caller's buffer may not outlive the step.
torch::Tensor ToTensor(std::span<const float> values, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<float*>(values.data()), shape, torch::kFloat32).clone();
}

std::vector<float> ToVector(const torch::Tensor& t) {
  const torch::Tensor flat = t.detach().contiguous().reshape({-1});
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

// One part of the split model: its module, its own optimizer and its place in the
// learning-rate schedule. Each part steps once per batch, so all parts share the step count.
struct Part {
  ModelSpec spec;
  core::TrainingConfig training;
  int64_t total_steps;
  CohortNet net;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  int64_t step = 0;

  Part(const ModelSpec& s, const core::TrainingConfig& t, int64_t total)
      : spec(s), training(t), total_steps(total), net(s), optimizer(NewOptimizer(net->parameters(), t)) {}

  // Clips this part's gradient on its own (the norm over its parameters only), sets the
  // scheduled learning rate and steps. A party never sees another part's gradient, so the
  // composed model's global norm is not available to clip by.
  void Step() {
    if (training.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(net->parameters(), training.max_grad_norm);
    const double lr = LearningRateAt(training, step, total_steps);
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    optimizer->step();
    ++step;
  }

  absl::StatusOr<core::ParameterSet> Parameters() {
    try {
      return ExtractParameters(net, spec.ParameterManifest());
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat(spec.name, ": reading parameters failed: ", e.what_without_backtrace()));
    }
  }

  absl::Status SetParameters(const core::ParameterSet& parameters) {
    try {
      return LoadParameters(net, parameters);
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat(spec.name, ": loading parameters failed: ", e.what_without_backtrace()));
    }
  }

  absl::Status Save(const std::filesystem::path& path) {
    absl::StatusOr<core::ParameterSet> parameters = Parameters();
    if (!parameters.ok()) return parameters.status();
    return WriteStateDict(*parameters, path.string());
  }
};

template <typename Impl>
absl::StatusOr<std::unique_ptr<Impl>> CreatePart(const ModelSpec& spec, const core::TrainingConfig& training,
                                                 int64_t total_steps, uint64_t seed) {
  if (total_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat("total_steps: expected at least 1 batch, got ", total_steps));
  }
  try {
    // As InitialParameters(spec, seed): the same seed gives the same initial weights.
    torch::manual_seed(seed);
    return std::make_unique<Impl>(spec, training, total_steps);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building model ", spec.name, " failed: ", e.what_without_backtrace()));
  }
}

// Checks the parts' sizes against `rows` labels and the top model's input, and returns
// them as tensors that record their gradient.
absl::StatusOr<std::vector<torch::Tensor>> PartTensors(const ModelSpec& top, std::span<const std::span<const float>> parts,
                                                      std::span<const int64_t> part_sizes, int64_t rows) {
  if (parts.empty() || parts.size() != part_sizes.size()) {
    return absl::InvalidArgumentError(absl::StrCat("split step: expected one size per part and at least one part, got ",
                                                   parts.size(), " parts and ", part_sizes.size(), " sizes"));
  }
  int64_t total = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (part_sizes[i] < 1 || parts[i].size() != static_cast<size_t>(rows * part_sizes[i])) {
      return absl::InvalidArgumentError(absl::StrCat("split step: part ", i, " holds ", parts[i].size(),
                                                     " values, expected ", rows, " rows x ", part_sizes[i]));
    }
    total += part_sizes[i];
  }
  if (top.input_shape != std::vector<int64_t>{total}) {
    return absl::InvalidArgumentError(absl::StrCat("split step: the parts' sizes [", absl::StrJoin(part_sizes, ", "),
                                                   "] sum to ", total, " but the top model's input_shape is [",
                                                   absl::StrJoin(top.input_shape, ", "), "]"));
  }
  std::vector<torch::Tensor> tensors;
  for (size_t i = 0; i < parts.size(); ++i) tensors.push_back(ToTensor(parts[i], {rows, part_sizes[i]}));
  return tensors;
}

absl::StatusOr<torch::Tensor> LabelTensor(std::span<const int64_t> labels, int64_t num_classes) {
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("split step: label ", i, " is ", labels[i], ", expected [0, ",
                                                     num_classes, ") (the top model's num_classes)"));
    }
  }
  return torch::from_blob(const_cast<int64_t*>(labels.data()), {static_cast<int64_t>(labels.size())}, torch::kInt64)
      .clone();
}

}  // namespace

// ---- BottomModel -------------------------------------------------------------------------

struct BottomModel::Impl : Part {
  using Part::Part;
  torch::Tensor pending_output;  // the last training Forward's output, graph attached
};

BottomModel::BottomModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BottomModel::~BottomModel() = default;

absl::StatusOr<std::unique_ptr<BottomModel>> BottomModel::Create(const ModelSpec& spec,
                                                                 const core::TrainingConfig& training,
                                                                 int64_t total_steps, uint64_t seed) {
  absl::StatusOr<std::unique_ptr<Impl>> impl = CreatePart<Impl>(spec, training, total_steps, seed);
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<BottomModel>(new BottomModel(std::move(*impl)));
}

int64_t BottomModel::output_size() const { return impl_->spec.num_classes; }

absl::StatusOr<std::vector<float>> BottomModel::Forward(std::span<const float> batch, int64_t rows, bool train) {
  const std::vector<int64_t>& input_shape = impl_->spec.input_shape;
  const int64_t input_size = ElementCount(input_shape);
  if (rows < 1 || batch.size() != static_cast<size_t>(rows * input_size)) {
    return absl::InvalidArgumentError(absl::StrCat("bottom model ", impl_->spec.name, ": the batch holds ", batch.size(),
                                                   " values, expected ", rows, " rows x ", input_size, " (input_shape [",
                                                   absl::StrJoin(input_shape, ", "), "])"));
  }
  try {
    std::vector<int64_t> shape = {rows};
    shape.insert(shape.end(), input_shape.begin(), input_shape.end());
    const torch::Tensor x = ToTensor(batch, shape);
    if (!train) {
      torch::NoGradGuard no_grad;
      impl_->net->eval();
      return ToVector(impl_->net->forward(x));
    }
    impl_->net->train();
    impl_->pending_output = impl_->net->forward(x);
    return ToVector(impl_->pending_output);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("bottom model ", impl_->spec.name, ": forward failed: ",
                                            e.what_without_backtrace()));
  }
}

absl::Status BottomModel::Backward(std::span<const float> grad_output) {
  if (!impl_->pending_output.defined()) {
    return absl::FailedPreconditionError(absl::StrCat("bottom model ", impl_->spec.name,
                                                      ": Backward without a training Forward before it"));
  }
  const int64_t rows = impl_->pending_output.size(0);
  if (grad_output.size() != static_cast<size_t>(rows * output_size())) {
    return absl::InvalidArgumentError(absl::StrCat("bottom model ", impl_->spec.name, ": the gradient holds ",
                                                   grad_output.size(), " values, expected ", rows, " rows x ",
                                                   output_size()));
  }
  try {
    const torch::Tensor grad = ToTensor(grad_output, {rows, output_size()});
    impl_->optimizer->zero_grad();
    impl_->pending_output.backward(grad);
    impl_->pending_output = torch::Tensor();
    impl_->Step();
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    impl_->pending_output = torch::Tensor();
    return absl::InternalError(absl::StrCat("bottom model ", impl_->spec.name, ": backward failed: ",
                                            e.what_without_backtrace()));
  }
}

absl::StatusOr<core::ParameterSet> BottomModel::Parameters() const { return impl_->Parameters(); }
absl::Status BottomModel::SetParameters(const core::ParameterSet& parameters) { return impl_->SetParameters(parameters); }
absl::Status BottomModel::Save(const std::filesystem::path& path) const { return impl_->Save(path); }

// ---- TopModel ----------------------------------------------------------------------------

struct TopModel::Impl : Part {
  using Part::Part;
};

TopModel::TopModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TopModel::~TopModel() = default;

absl::StatusOr<std::unique_ptr<TopModel>> TopModel::Create(const ModelSpec& spec, const core::TrainingConfig& training,
                                                           int64_t total_steps, uint64_t seed) {
  if (spec.input_shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("top model ", spec.name, ": input_shape must be [sum of the bottom "
                                                   "output sizes], got [", absl::StrJoin(spec.input_shape, ", "), "]"));
  }
  absl::StatusOr<std::unique_ptr<Impl>> impl = CreatePart<Impl>(spec, training, total_steps, seed);
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<TopModel>(new TopModel(std::move(*impl)));
}

absl::StatusOr<TopModel::StepResult> TopModel::TrainStep(std::span<const std::span<const float>> parts,
                                                         std::span<const int64_t> part_sizes,
                                                         std::span<const int64_t> labels) {
  const int64_t rows = static_cast<int64_t>(labels.size());
  if (rows < 1) return absl::InvalidArgumentError("split step: the batch has no labels");
  try {
    absl::StatusOr<std::vector<torch::Tensor>> inputs = PartTensors(impl_->spec, parts, part_sizes, rows);
    if (!inputs.ok()) return inputs.status();
    absl::StatusOr<torch::Tensor> target = LabelTensor(labels, impl_->spec.num_classes);
    if (!target.ok()) return target.status();
    for (torch::Tensor& t : *inputs) t.requires_grad_(true);

    impl_->net->train();
    impl_->optimizer->zero_grad();
    const torch::Tensor logits = impl_->net->forward(torch::cat(*inputs, 1));
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, *target);
    loss.backward();

    StepResult result;
    result.loss = loss.item<double>();
    result.correct = logits.argmax(1).eq(*target).sum().item<int64_t>();
    for (const torch::Tensor& t : *inputs) result.part_gradients.push_back(ToVector(t.grad()));
    impl_->Step();
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("top model ", impl_->spec.name, ": training step failed: ",
                                            e.what_without_backtrace()));
  }
}

absl::StatusOr<TopModel::EvalResult> TopModel::Evaluate(std::span<const std::span<const float>> parts,
                                                        std::span<const int64_t> part_sizes,
                                                        std::span<const int64_t> labels) {
  const int64_t rows = static_cast<int64_t>(labels.size());
  EvalResult result;
  if (rows == 0) return result;
  try {
    torch::NoGradGuard no_grad;
    absl::StatusOr<std::vector<torch::Tensor>> inputs = PartTensors(impl_->spec, parts, part_sizes, rows);
    if (!inputs.ok()) return inputs.status();
    absl::StatusOr<torch::Tensor> target = LabelTensor(labels, impl_->spec.num_classes);
    if (!target.ok()) return target.status();
    impl_->net->eval();
    const torch::Tensor logits = impl_->net->forward(torch::cat(*inputs, 1));
    result.loss_sum = torch::nn::functional::cross_entropy(
                          logits, *target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                          .item<double>();
    result.correct = logits.argmax(1).eq(*target).sum().item<int64_t>();
    result.rows = rows;
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("top model ", impl_->spec.name, ": evaluation failed: ",
                                            e.what_without_backtrace()));
  }
}

absl::StatusOr<core::ParameterSet> TopModel::Parameters() const { return impl_->Parameters(); }
absl::Status TopModel::SetParameters(const core::ParameterSet& parameters) { return impl_->SetParameters(parameters); }
absl::Status TopModel::Save(const std::filesystem::path& path) const { return impl_->Save(path); }

// ---- Label protection --------------------------------------------------------------------

void AddGradientNoise(std::span<float> gradients, double stddev, uint64_t seed, uint64_t step, uint64_t party) {
  if (stddev <= 0) return;
  // Seeded from all three by SplitMix64 steps; Gaussians by Box-Muller on 53-bit uniforms,
  // written out so that a run does not depend on a standard library's normal_distribution.
  auto mix = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  };
  std::mt19937_64 rng(mix(mix(mix(seed) ^ step) ^ party));
  auto uniform = [&rng] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };  // in (0, 1)
  constexpr double kTwoPi = 6.283185307179586;
  for (size_t i = 0; i < gradients.size(); i += 2) {
    const double radius = stddev * std::sqrt(-2.0 * std::log(uniform()));
    const double angle = kTwoPi * uniform();
    gradients[i] += static_cast<float>(radius * std::cos(angle));
    if (i + 1 < gradients.size()) gradients[i + 1] += static_cast<float>(radius * std::sin(angle));
  }
}

}  // namespace cohort::training
