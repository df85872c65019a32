#include "training/trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "training/dp_sgd_step.h"
#include "training/lr_schedule.h"
#include "training/per_example_grads.h"
#include "training/torch_model.h"

namespace cohort::training {
namespace {

torch::Tensor FeaturesOf(Dataset& data) {
  std::vector<int64_t> shape = {static_cast<int64_t>(data.size())};
  shape.insert(shape.end(), data.example_shape.begin(), data.example_shape.end());
  return torch::from_blob(data.features.data(), shape, torch::kFloat32);
}

torch::Tensor LabelsOf(Dataset& data) {
  return torch::from_blob(data.labels.data(), {static_cast<int64_t>(data.size())}, torch::kInt64);
}

absl::Status CheckShape(const ModelSpec& spec, const Dataset& data, const char* which) {
  if (data.example_shape != spec.input_shape) {
    return absl::InvalidArgumentError(absl::StrCat(which, " data has examples of shape [",
                                                   absl::StrJoin(data.example_shape, ", "), "] but model_config.input_shape is [",
                                                   absl::StrJoin(spec.input_shape, ", "), "]"));
  }
  if (data.num_classes > spec.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(which, " data has ", data.num_classes,
                                                   " classes but the model outputs ", spec.num_classes));
  }
  return absl::OkStatus();
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(CohortNet& net, const core::TrainingConfig& c) {
  if (c.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        net->parameters(), torch::optim::AdamOptions(c.learning_rate)
                               .betas({c.beta1, c.beta2})
                               .eps(c.eps)
                               .weight_decay(c.weight_decay));
  }
  if (c.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        net->parameters(), torch::optim::AdamWOptions(c.learning_rate)
                               .betas({c.beta1, c.beta2})
                               .eps(c.eps)
                               .weight_decay(c.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(net->parameters(), torch::optim::SGDOptions(c.learning_rate)
                                                                    .momentum(c.momentum)
                                                                    .nesterov(c.nesterov)
                                                                    .weight_decay(c.weight_decay));
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

core::EvalMetrics EvaluateNet(CohortNet& net, Dataset& data, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  net->eval();
  const torch::Tensor x = FeaturesOf(data), y = LabelsOf(data);
  const int64_t n = static_cast<int64_t>(data.size());
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    const torch::Tensor logits = net->forward(x.slice(0, begin, end));
    const torch::Tensor target = y.slice(0, begin, end);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(target).sum().item<int64_t>();
  }
  core::EvalMetrics m;
  m.samples = static_cast<uint64_t>(n);
  if (n > 0) {
    m.loss = loss_sum / static_cast<double>(n);
    m.accuracy = static_cast<double>(correct) / static_cast<double>(n);
  }
  return m;
}

// The learning-rate schedule over the whole job, and where this round starts in it.
struct Schedule {
  const core::TrainingConfig& config;
  int64_t first_step;
  int64_t total_steps;
  double At(int64_t step_in_round) const { return LearningRateAt(config, first_step + step_in_round, total_steps); }
};

struct LoopResult {
  int64_t steps = 0;
  double last_epoch_loss = 0;  // mean training loss over the round's last epoch
};

// Shuffled epochs of fixed-size batches, the batch order fixed by `shuffle_seed`.
LoopResult TrainPlain(CohortNet& net, torch::optim::Optimizer& optimizer, Dataset& train, uint64_t shuffle_seed,
                      int64_t steps_per_round, const Schedule& schedule) {
  const core::TrainingConfig& config = schedule.config;
  const int64_t n = static_cast<int64_t>(train.size());
  const int64_t batch = std::min<int64_t>(config.batch_size, n);
  const torch::Tensor x = FeaturesOf(train), y = LabelsOf(train);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(shuffle_seed);

  LoopResult result;
  double epoch_loss = 0;
  int64_t epoch_batches = 0;
  for (int64_t epoch = 0; epoch < config.local_epochs && result.steps < steps_per_round; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    const torch::Tensor perm = torch::from_blob(order.data(), {n}, torch::kInt64);
    epoch_loss = 0;
    epoch_batches = 0;
    for (int64_t begin = 0; begin < n && result.steps < steps_per_round; begin += batch) {
      const torch::Tensor idx = perm.slice(0, begin, std::min(n, begin + batch));
      const torch::Tensor xb = x.index_select(0, idx), yb = y.index_select(0, idx);
      SetLearningRate(optimizer, schedule.At(result.steps));
      optimizer.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(xb), yb);
      loss.backward();
      if (config.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(net->parameters(), config.max_grad_norm);
      optimizer.step();
      epoch_loss += loss.item<double>();
      ++epoch_batches;
      ++result.steps;
    }
  }
  result.last_epoch_loss = epoch_batches > 0 ? epoch_loss / static_cast<double>(epoch_batches) : 0;
  return result;
}

// DP-SGD (training/dp_sgd.h): `spend.steps` steps on Poisson-sampled batches, each on the
// privatized gradient. Sampling and noise come from a SecureGenerator, not the job seed.
absl::StatusOr<LoopResult> TrainDpSgd(CohortNet& net, const ModelSpec& spec, torch::optim::Optimizer& optimizer,
                                      Dataset& train, const DpSgdSpend& spend, const Schedule& schedule) {
  std::vector<std::string> labels;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    labels.push_back(absl::StrCat("model_config.layers[", i, "] (", spec.layers[i].type, ")"));
  }
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), std::move(labels));
  if (!engine.ok()) return engine.status();
  absl::StatusOr<SecureGenerator> random = SecureGenerator::Create();
  if (!random.ok()) return random.status();

  const int64_t n = static_cast<int64_t>(train.size());
  const int64_t batch = std::min<int64_t>(schedule.config.batch_size, n);
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const torch::Tensor x = FeaturesOf(train), y = LabelsOf(train);
  std::vector<torch::Tensor> parameters = net->parameters();
  LoopResult result;
  double epoch_loss = 0;
  int64_t epoch_examples = 0;
  for (int64_t step = 0; step < spend.steps; ++step) {
    if (step % steps_per_epoch == 0) {
      epoch_loss = 0;
      epoch_examples = 0;
    }
    if (absl::Status s = random->Reseed(); !s.ok()) return s;
    const torch::Tensor idx = PoissonSample(n, spend.sampling_rate, random->generator());
    DpStepStats stats;
    std::vector<torch::Tensor> gradient = PrivatizedGradient(*engine, parameters, x.index_select(0, idx),
                                                             y.index_select(0, idx), spend, random->generator(), &stats);
    SetLearningRate(optimizer, schedule.At(step));
    for (size_t i = 0; i < parameters.size(); ++i) parameters[i].mutable_grad() = std::move(gradient[i]);
    optimizer.step();
    epoch_loss += stats.loss_sum;
    epoch_examples += stats.batch_size;
    ++result.steps;
  }
  result.last_epoch_loss = epoch_examples > 0 ? epoch_loss / static_cast<double>(epoch_examples) : 0;
  return result;
}

}  // namespace

struct LocalTrainer::Impl {
  ModelSpec spec;
  Dataset train, eval;
  uint64_t seed;
  CohortNet net;
  Impl(const ModelSpec& s, Dataset t, Dataset e, uint64_t sd)
      : spec(s), train(std::move(t)), eval(std::move(e)), seed(sd), net(s) {}
};

LocalTrainer::LocalTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalTrainer::~LocalTrainer() = default;

size_t LocalTrainer::num_train_examples() const { return impl_->train.size(); }

absl::StatusOr<std::unique_ptr<LocalTrainer>> LocalTrainer::Create(const ModelSpec& spec, Dataset train, Dataset eval,
                                                                   uint64_t seed) {
  if (absl::Status s = CheckShape(spec, train, "training"); !s.ok()) return s;
  if (eval.size() > 0) {
    if (absl::Status s = CheckShape(spec, eval, "held-out"); !s.ok()) return s;
  }
  if (train.size() == 0) return absl::InvalidArgumentError("training data is empty");
  try {
    return std::unique_ptr<LocalTrainer>(
        new LocalTrainer(std::make_unique<Impl>(spec, std::move(train), std::move(eval), seed)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the model failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<RoundResult> LocalTrainer::TrainRound(const core::ParameterSet& global,
                                                     const core::TrainingConfig& config, uint64_t round,
                                                     uint64_t total_rounds, const core::PrivacyConfig& privacy) {
  const auto started = std::chrono::steady_clock::now();
  std::optional<DpSgdSpend> spend;
  if (privacy.mechanism == "dp_sgd") {
    absl::StatusOr<DpSgdSpend> planned = PlanDpSgdRound(privacy, config, impl_->train.size(), total_rounds);
    if (!planned.ok()) return planned.status();
    spend = *planned;
  }
  try {
    CohortNet& net = impl_->net;
    if (absl::Status s = LoadParameters(net, global); !s.ok()) return s;
    torch::manual_seed(impl_->seed * 1000003 + round);
    net->train();
    std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(net, config);

    const int64_t n = static_cast<int64_t>(impl_->train.size());
    const int64_t steps_per_round = StepsPerRound(config, impl_->train.size());
    const Schedule schedule{config, steps_per_round * static_cast<int64_t>(round - 1),
                            steps_per_round * static_cast<int64_t>(total_rounds)};
    absl::StatusOr<LoopResult> loop =
        spend ? TrainDpSgd(net, impl_->spec, *optimizer, impl_->train, *spend, schedule)
              : TrainPlain(net, *optimizer, impl_->train, impl_->seed * 7919 + round, steps_per_round, schedule);
    if (!loop.ok()) return loop.status();

    RoundResult result;
    result.delta = ExtractParameters(net, global.manifest());
    std::span<float> d = result.delta.floats();
    std::span<const float> g = global.floats();
    for (size_t i = 0; i < d.size(); ++i) d[i] -= g[i];

    core::TrainMetrics& m = result.metrics;
    m.train_loss = loop->last_epoch_loss;
    m.steps = static_cast<uint64_t>(loop->steps);
    m.train_samples = static_cast<uint64_t>(n);
    if (impl_->eval.size() > 0) {
      const core::EvalMetrics e = EvaluateNet(net, impl_->eval, config.eval_batch_size);
      m.eval_loss = e.loss;
      m.eval_accuracy = e.accuracy;
      m.eval_samples = e.samples;
    }
    m.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    result.dp_sgd = spend;
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training round ", round, " failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<core::EvalMetrics> Evaluate(const ModelSpec& spec, const core::ParameterSet& parameters,
                                           const Dataset& data, int64_t batch_size) {
  if (absl::Status s = CheckShape(spec, data, "evaluation"); !s.ok()) return s;
  try {
    CohortNet net(spec);
    if (absl::Status s = LoadParameters(net, parameters); !s.ok()) return s;
    Dataset copy = data;  // from_blob needs mutable storage; evaluation sets are small
    return EvaluateNet(net, copy, batch_size);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("evaluation failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<core::ParameterSet> InitialParameters(const ModelSpec& spec, uint64_t seed) {
  try {
    torch::manual_seed(seed);
    CohortNet net(spec);
    return ExtractParameters(net, spec.ParameterManifest());
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the model failed: ", e.what_without_backtrace()));
  }
}

void SetTrainingThreads(int threads) { torch::set_num_threads(std::max(1, threads)); }

}  // namespace cohort::training
