#include "training/trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include <time.h>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/bounded_json.h"
#include "core/limits.h"
#include "training/data_parallel.h"
#include "training/device.h"
#include "training/dp_sgd_step.h"
#include "training/lora.h"
#include "training/lr_schedule.h"
#include "training/per_example_grads.h"
#include "training/torch_model.h"
#include "training/train_step.h"

namespace cohort::training {
namespace {

// CPU time of this process, all threads (LibTorch's intra-op pool included).
double ProcessCpuSeconds() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// The learning-rate schedule over the whole job, and where this round lies in it.
struct Schedule {
  const core::TrainingConfig& config;
  RoundSteps round;
  double At(int64_t step_in_round) const {
    return LearningRateAt(config, round.first_step + step_in_round, round.total_steps);
  }
};

struct LoopResult {
  int64_t steps = 0;
  double last_epoch_loss = 0;  // mean training loss over the round's last epoch
};

// Where one step runs: the device, the precision, and the worker group (null: alone).
struct StepContext {
  torch::Device device;
  std::string precision;
  Collective* group = nullptr;
  int rank() const { return group == nullptr ? 0 : group->rank(); }
  int size() const { return group == nullptr ? 1 : group->size(); }
};

// Shuffled epochs of fixed-size batches, the batch order fixed by `shuffle_seed`, until the
// round's steps are taken (or, without max_steps, local_epochs are done). An optimizer step
// sums the gradients of gradient_accumulation_steps batches. Each worker takes its shard of
// every batch; the loss is summed over the shard's predictions (one per example, or one per
// token) and divided by the whole batch's predictions times the batches per step, so the
// group's summed gradient is the mean over batches of each whole batch's mean gradient.
absl::StatusOr<LoopResult> TrainPlain(CohortNet& net, torch::optim::Optimizer& optimizer, Dataset& train,
                                      uint64_t shuffle_seed, const Schedule& schedule, const StepContext& where) {
  const core::TrainingConfig& config = schedule.config;
  const int64_t n = static_cast<int64_t>(train.size());
  const int64_t batch = std::min<int64_t>(config.batch_size, n);
  const int64_t per_example = static_cast<int64_t>(train.label_size());
  const int64_t accumulate = std::max<int64_t>(1, config.gradient_accumulation_steps);
  const int64_t steps = schedule.round.steps;
  const int64_t max_epochs = config.max_steps > 0 ? std::numeric_limits<int64_t>::max() : config.local_epochs;
  const torch::Tensor x = FeaturesOf(train), y = LabelsOf(train);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(shuffle_seed);
  std::vector<torch::Tensor> parameters = TrainableParameters(net);
  std::optional<LossScaler> scaler;
  if (where.precision == "fp16") scaler.emplace();

  LoopResult result;
  double epoch_loss = 0;  // sum of each step's mean loss
  int64_t epoch_steps = 0;
  int64_t pending = 0;        // batches accumulated into the next step
  double pending_loss = 0;    // this worker's summed loss over them, divided by each batch's predictions
  // One optimizer step on the accumulated gradients; a round that ends with fewer than
  // `accumulate` batches pending scales their gradient up to a mean over what it has.
  auto step = [&]() -> absl::Status {
    double loss = pending_loss;
    if (where.group != nullptr) {
      std::vector<double> extras = {loss};
      if (absl::Status s = AllReduceGradients(*where.group, parameters, extras); !s.ok()) return s;
      loss = extras[0];
    }
    const double rescale = static_cast<double>(accumulate) / static_cast<double>(pending);
    bool take_step = true;
    {
      torch::NoGradGuard no_grad;
      const double divide = scaler ? scaler->scale() / rescale : 1.0 / rescale;
      if (divide != 1.0) {
        for (torch::Tensor& p : parameters) {
          if (p.grad().defined()) p.mutable_grad().div_(divide);
        }
      }
    }
    if (scaler) take_step = scaler->Update(GradientsFinite(parameters));
    if (take_step) {
      if (config.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(parameters, config.max_grad_norm);
      optimizer.step();
    }
    epoch_loss += loss / static_cast<double>(pending);
    ++epoch_steps;
    ++result.steps;
    pending = 0;
    pending_loss = 0;
    return absl::OkStatus();
  };
  for (int64_t epoch = 0; epoch < max_epochs && result.steps < steps; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    const torch::Tensor perm = torch::from_blob(order.data(), {n}, torch::kInt64);
    epoch_loss = 0;
    epoch_steps = 0;
    for (int64_t begin = 0; begin < n && result.steps < steps; begin += batch) {
      const int64_t size = std::min(n, begin + batch) - begin;
      const Shard shard = ShardOf(size, where.rank(), where.size());
      if (pending == 0) {
        SetLearningRate(optimizer, schedule.At(result.steps));
        // Released, not zeroed (this LibTorch's Optimizer::zero_grad zeroes): backward then
        // hands each parameter its new gradient instead of adding it into the old one, which
        // held a second gradient-sized buffer while it ran (a model size for an MLP).
        for (torch::Tensor& p : parameters) p.mutable_grad().reset();
      }
      const double predictions = static_cast<double>(size * per_example);
      if (shard.end > shard.begin) {
        const torch::Tensor idx = perm.slice(0, begin + shard.begin, begin + shard.end);
        const torch::Tensor xb = ToDevice(x, idx, where.device), yb = ToDevice(y, idx, where.device);
        torch::Tensor loss;
        {
          AutocastScope autocast(where.device, where.precision);
          loss = SummedCrossEntropy(net->forward(xb), yb, config.label_smoothing);
        }
        const double divide = predictions * static_cast<double>(accumulate);
        (scaler ? loss * (scaler->scale() / divide) : loss / divide).backward();
        pending_loss += loss.item<double>() / predictions;
      }
      if (++pending == accumulate) {
        if (absl::Status s = step(); !s.ok()) return s;
      }
    }
  }
  if (pending > 0) {
    if (absl::Status s = step(); !s.ok()) return s;
  }
  result.last_epoch_loss = epoch_steps > 0 ? epoch_loss / static_cast<double>(epoch_steps) : 0;
  return result;
}

// Where DP-SGD's randomness comes from: each step's Poisson-sampling seed (worker 0 draws it
// and the group shares it, so every worker sees the same batch) and the noise (worker 0's
// alone). From the OS's secure randomness, or from a fixed seed in tests.
class DpRandomness {
 public:
  static absl::StatusOr<DpRandomness> Create(std::optional<uint64_t> test_seed) {
    if (test_seed) {
      return DpRandomness(std::nullopt, at::make_generator<at::CPUGeneratorImpl>(*test_seed), *test_seed);
    }
    absl::StatusOr<SecureGenerator> secure = SecureGenerator::Create();
    if (!secure.ok()) return secure.status();
    at::Generator noise = secure->generator();
    return DpRandomness(std::move(*secure), std::move(noise), 0);
  }
  absl::StatusOr<uint64_t> NextSampleSeed() {
    if (!secure_) return test_seeds_();
    return OsRandom64();
  }
  // The generator for this step's noise, freshly reseeded when secure.
  absl::StatusOr<at::Generator*> Noise() {
    if (secure_) {
      if (absl::Status s = secure_->Reseed(); !s.ok()) return s;
      return &secure_->generator();
    }
    return &test_noise_;
  }

 private:
  DpRandomness(std::optional<SecureGenerator> secure, at::Generator test_noise, uint64_t test_seed)
      : secure_(std::move(secure)), test_noise_(std::move(test_noise)), test_seeds_(test_seed ^ 0x9e3779b97f4a7c15ULL) {}
  std::optional<SecureGenerator> secure_;
  at::Generator test_noise_;
  std::mt19937_64 test_seeds_;
};

// DP-SGD (training/dp_sgd.h): `spend.steps` steps on Poisson-sampled batches, each on the
// privatized gradient. With a group, each worker clips the per-example gradients of its
// shard of the sample, worker 0 adds the noise, and the sum over workers is the same
// privatized gradient one worker would compute from the whole sample.
absl::StatusOr<LoopResult> TrainDpSgd(CohortNet& net, const ModelSpec& spec, torch::optim::Optimizer& optimizer,
                                      Dataset& train, const DpSgdSpend& spend, const Schedule& schedule,
                                      const StepContext& where, std::optional<uint64_t> test_seed) {
  std::vector<std::string> labels;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    labels.push_back(absl::StrCat("model_config.layers[", i, "] (", spec.layers[i].type, ")"));
  }
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), std::move(labels));
  if (!engine.ok()) return engine.status();
  absl::StatusOr<DpRandomness> random = DpRandomness::Create(test_seed);
  if (!random.ok()) return random.status();

  const int64_t n = static_cast<int64_t>(train.size());
  const int64_t batch = std::min<int64_t>(schedule.config.batch_size, n);
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const torch::Tensor x = FeaturesOf(train), y = LabelsOf(train);
  std::vector<torch::Tensor> parameters = TrainableParameters(net);
  LoopResult result;
  double epoch_loss = 0;
  int64_t epoch_examples = 0;
  for (int64_t step = 0; step < spend.steps; ++step) {
    if (step % steps_per_epoch == 0) {
      epoch_loss = 0;
      epoch_examples = 0;
    }
    uint64_t sample_seed = 0;
    if (where.rank() == 0) {
      absl::StatusOr<uint64_t> drawn = random->NextSampleSeed();
      if (!drawn.ok()) return drawn.status();
      sample_seed = *drawn;
    }
    if (where.group != nullptr) {
      if (absl::Status s = where.group->Broadcast(std::as_writable_bytes(std::span<uint64_t>(&sample_seed, 1)), 0);
          !s.ok()) {
        return s;
      }
    }
    at::Generator sampler = at::make_generator<at::CPUGeneratorImpl>(sample_seed);
    const torch::Tensor sample = PoissonSample(n, spend.sampling_rate, sampler);
    const Shard shard = ShardOf(sample.size(0), where.rank(), where.size());
    const torch::Tensor idx = sample.slice(0, shard.begin, shard.end);
    DpStepStats stats;
    std::vector<torch::Tensor> gradient;
    {
      AutocastScope autocast(where.device, where.precision);
      gradient = ClippedGradientSum(*engine, parameters, ToDevice(x, idx, where.device), ToDevice(y, idx, where.device),
                                    spend.clip_norm, &stats);
    }
    if (where.rank() == 0) {
      absl::StatusOr<at::Generator*> noise = random->Noise();
      if (!noise.ok()) return noise.status();
      AddGaussianNoise(gradient, spend.noise_multiplier * spend.clip_norm, **noise);
    }
    for (size_t i = 0; i < parameters.size(); ++i) parameters[i].mutable_grad() = std::move(gradient[i]);
    double loss_sum = stats.loss_sum, examples = static_cast<double>(stats.batch_size);
    if (where.group != nullptr) {
      std::vector<double> extras = {loss_sum, examples};
      if (absl::Status s = AllReduceGradients(*where.group, parameters, extras); !s.ok()) return s;
      loss_sum = extras[0];
      examples = extras[1];
    }
    {
      torch::NoGradGuard no_grad;
      for (torch::Tensor& p : parameters) p.mutable_grad().div_(spend.expected_batch_size);
    }
    SetLearningRate(optimizer, schedule.At(step));
    optimizer.step();
    epoch_loss += loss_sum;
    epoch_examples += static_cast<int64_t>(examples);
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
  TrainerOptions options;
  CohortNet net;
  std::string device;  // where net lives: empty until the first round moves it
  std::optional<PlateauSchedule> plateau;  // lr_scheduler "plateau": this site's, across rounds
  Impl(const ModelSpec& s, Dataset t, Dataset e, uint64_t sd, TrainerOptions o)
      : spec(s), train(std::move(t)), eval(std::move(e)), seed(sd), options(std::move(o)), net(s) {}
};

namespace {

// What worker 0 tells the others once, at Create: the model, how many rows it trains on, and
// for LoRA the file it read the base model from (each worker reads and checks its own).
std::string HelloText(const ModelSpec& spec, size_t train_rows) {
  nlohmann::json hello{{"model_config", spec.config}, {"train_rows", train_rows}};
  if (spec.uses_lora()) hello["lora_base_model"] = spec.transformer->lora->base_model;
  return hello.dump();
}

}  // namespace

LocalTrainer::LocalTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LocalTrainer::~LocalTrainer() {
  // Worker 0 releases the others; if the group already failed they are gone or will fail.
  if (Collective* group = impl_->options.group; group != nullptr && group->rank() == 0) {
    RoundOrder stop;
    stop.stop = true;
    (void)SendRoundOrder(*group, stop, nullptr);
  }
}

size_t LocalTrainer::num_train_examples() const { return impl_->train.size(); }
std::string LocalTrainer::device() const { return impl_->device; }

absl::StatusOr<std::unique_ptr<LocalTrainer>> LocalTrainer::Create(const ModelSpec& spec, Dataset train, Dataset eval,
                                                                   uint64_t seed, TrainerOptions options) {
  if (absl::Status s = CheckData(spec, train, "training"); !s.ok()) return s;
  if (absl::Status s = CheckLoraBaseLoaded(spec); !s.ok()) return s;
  if (eval.size() > 0) {
    if (absl::Status s = CheckData(spec, eval, "held-out"); !s.ok()) return s;
  }
  if (train.size() == 0) return absl::InvalidArgumentError("training data is empty");
  if (!options.device.empty()) {
    if (absl::Status s = core::CheckDeviceName(options.device, "--device"); !s.ok()) return s;
  }
  if (Collective* group = options.group; group != nullptr && group->rank() == 0) {
    std::string hello = HelloText(spec, train.size());
    if (absl::Status s = BroadcastString(*group, hello, 0); !s.ok()) return s;
  }
  try {
    return std::unique_ptr<LocalTrainer>(
        new LocalTrainer(std::make_unique<Impl>(spec, std::move(train), std::move(eval), seed, std::move(options))));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the model failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<RoundResult> LocalTrainer::TrainRound(core::ParameterSet global,
                                                     const core::TrainingConfig& requested, uint64_t round,
                                                     uint64_t total_rounds, const core::PrivacyConfig& privacy) {
  const auto started = std::chrono::steady_clock::now();
  const double cpu_started = ProcessCpuSeconds();
  Collective* group = impl_->options.group;
  // The plateau scheduler's cuts so far, folded into the learning rates; the other workers of a
  // group (which hold no held-out data) receive the rates already cut and never cut them again.
  core::TrainingConfig config = requested;
  if (config.lr_scheduler == "plateau") {
    if (!impl_->plateau) impl_->plateau.emplace(config);
    config.learning_rate *= impl_->plateau->factor();
    config.min_learning_rate *= impl_->plateau->factor();
  }
  if (group != nullptr && group->rank() == 0) {
    RoundOrder order{false, config, privacy, round, total_rounds};
    if (absl::Status s = SendRoundOrder(*group, order, &global); !s.ok()) return s;
  }
  std::optional<DpSgdSpend> spend;
  if (privacy.mechanism == "dp_sgd" && impl_->spec.transformer) {
    return absl::InvalidArgumentError(
        "privacy.mechanism: \"dp_sgd\" does not support transformer models (its per-example gradients cover "
        "layer-list models only); use \"client_dp\" or a model_config with \"layers\"");
  }
  if (privacy.mechanism == "dp_sgd") {
    absl::StatusOr<DpSgdSpend> planned = PlanDpSgdRound(privacy, config, impl_->train.size(), total_rounds);
    if (!planned.ok()) return planned.status();
    spend = *planned;
  }
  absl::StatusOr<std::string> device =
      ResolveDevice(impl_->options.device.empty() ? config.device : impl_->options.device);
  if (!device.ok()) return device.status();
  if (config.precision == "fp16" && *device == "cpu") {
    return absl::InvalidArgumentError(
        "training_config.precision: \"fp16\" needs a CUDA device, and this site trains on the CPU; use \"bf16\"");
  }
  if (config.precision == "fp16" && spend) {
    return absl::InvalidArgumentError(
        "training_config.precision: \"fp16\" is not supported with privacy.mechanism \"dp_sgd\" (its loss scaling "
        "would scale the per-example gradients before clipping); use \"bf16\" or \"fp32\"");
  }
  try {
    CohortNet& net = impl_->net;
    if (impl_->device != *device) {  // the model stays on its device across rounds
      net->to(torch::Device(*device));
      impl_->device = *device;
    }
    if (absl::Status s = LoadParameters(net, global); !s.ok()) return s;
    // Dropout masks differ per worker: each drops units of its own examples.
    torch::manual_seed(impl_->seed * 1000003 + round + (group == nullptr ? 0 : 7777u * group->rank()));
    net->train();
    std::unique_ptr<torch::optim::Optimizer> optimizer = NewOptimizer(TrainableParameters(net), config);

    const int64_t n = static_cast<int64_t>(impl_->train.size());
    const Schedule schedule{config, StepsOfRound(config, impl_->train.size(), round, total_rounds)};
    const StepContext where{torch::Device(*device), config.precision, group};
    absl::StatusOr<LoopResult> loop =
        spend ? TrainDpSgd(net, impl_->spec, *optimizer, impl_->train, *spend, schedule, where,
                           impl_->options.dp_sgd_seed_for_tests)
              : TrainPlain(net, *optimizer, impl_->train, impl_->seed * 7919 + round, schedule, where);
    if (!loop.ok()) return loop.status();

    optimizer.reset();
    for (torch::Tensor& p : TrainableParameters(net)) p.mutable_grad().reset();  // a model size, not needed now
    RoundResult result;
    WriteDeltaOver(net, global);  // back to host memory, once per round, into the global's own buffer
    result.delta = std::move(global);

    core::TrainMetrics& m = result.metrics;
    m.train_loss = loop->last_epoch_loss;
    m.steps = static_cast<uint64_t>(loop->steps);
    m.train_samples = static_cast<uint64_t>(n);
    if (impl_->eval.size() > 0) {
      const core::EvalMetrics e = EvaluateNet(net, impl_->eval, EvalBatchSize(impl_->spec, impl_->eval, config.eval_batch_size));
      m.eval_loss = e.loss;
      m.eval_accuracy = e.accuracy;
      m.eval_samples = e.samples;
      if (impl_->plateau) impl_->plateau->Observe(e.loss);
    }
    m.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    m.train_cpu_seconds = ProcessCpuSeconds() - cpu_started;
    result.dp_sgd = spend;
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training round ", round, " failed: ", e.what_without_backtrace()));
  }
}

absl::Status RunFollower(Dataset train, uint64_t seed, TrainerOptions options) {
  Collective* group = options.group;
  if (group == nullptr || group->rank() == 0) {
    return absl::InvalidArgumentError("RunFollower is for workers 1..W-1 of a group");
  }
  std::string hello;
  if (absl::Status s = BroadcastString(*group, hello, 0); !s.ok()) return s;
  absl::StatusOr<nlohmann::json> json = core::ParseBoundedJson(hello, core::kTaskConfigJson, "model from worker 0");
  if (!json.ok()) return json.status();
  if (!json->contains("model_config") || !json->contains("train_rows") || !(*json)["train_rows"].is_number_unsigned()) {
    return absl::DataLossError("worker 0 sent no model_config and train_rows");
  }
  const uint64_t rows = (*json)["train_rows"].get<uint64_t>();
  const std::string me = absl::StrCat("worker ", group->rank(), " of ", group->size());
  if (rows != train.size()) {
    return absl::FailedPreconditionError(absl::StrCat(me, " holds ", train.size(), " training rows but worker 0 holds ",
                                                      rows, ": every worker of a site must load the same data "
                                                      "(same --data, --shard, --seed, --train-subset)"));
  }
  absl::StatusOr<ModelSpec> spec = ParseModelSpec((*json)["model_config"]);
  if (!spec.ok()) return spec.status();
  if (spec->uses_lora()) {
    const auto path_entry = json->find("lora_base_model");
    std::string path = options.lora_base_model;
    if (path.empty() && path_entry != json->end() && path_entry->is_string()) path = path_entry->get<std::string>();
    if (absl::Status s = LoadLoraBase(&*spec, path); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(me, ": ", s.message()));
    }
  }
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer =
      LocalTrainer::Create(*spec, std::move(train), Dataset{}, seed, std::move(options));
  if (!trainer.ok()) return trainer.status();
  core::ParameterSet global(spec->ParameterManifest());
  while (true) {
    absl::StatusOr<RoundOrder> order = ReceiveRoundOrder(*group, global);
    if (!order.ok()) return order.status();
    if (order->stop) return absl::OkStatus();
    SetTrainingThreads(static_cast<int>(order->config.threads));
    absl::StatusOr<RoundResult> result =
        (*trainer)->TrainRound(std::move(global), order->config, order->round, order->total_rounds, order->privacy);
    if (!result.ok()) return absl::Status(result.status().code(), absl::StrCat(me, ": ", result.status().message()));
    global = std::move(result->delta);  // the next order's model is received into this buffer
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
