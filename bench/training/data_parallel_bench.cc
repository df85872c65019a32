// Samples per second of one site's local training: the Fashion-MNIST CNN (configs/models/
// niid_cnn.json) or a wider CNN (about 1.2 M parameters), on the CPU or a GPU, in fp32, bf16
// or fp16, with 1 or W worker processes over Gloo (the workers are copies of this program).
//   cohort_data_parallel_bench --model niid_cnn --device cpu --precision fp32 --workers 2 --steps 40
// Prints one line: model, device, precision, workers, batch, steps, seconds, samples/s.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "training/data_parallel.h"
#include "training/data_readers.h"
#include "training/model_spec.h"
#include "training/trainer.h"

using namespace cohort;

namespace {

nlohmann::json ModelConfig(const std::string& name) {
  if (name == "wide_cnn") {
    return nlohmann::json::parse(R"({"name": "wide_cnn", "input_shape": [1, 28, 28], "num_classes": 10, "layers": [
      {"type": "normalize", "mean": 0.286, "std": 0.353},
      {"type": "conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1}, {"type": "relu"},
      {"type": "conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1}, {"type": "relu"},
      {"type": "max_pool2d", "kernel_size": 2},
      {"type": "conv2d", "out_channels": 128, "kernel_size": 3, "padding": 1}, {"type": "relu"},
      {"type": "conv2d", "out_channels": 128, "kernel_size": 3, "padding": 1}, {"type": "relu"},
      {"type": "max_pool2d", "kernel_size": 2},
      {"type": "flatten"}, {"type": "linear", "out_features": 128}, {"type": "relu"},
      {"type": "linear", "out_features": 10}]})");
  }
  std::ifstream in(std::string(COHORT_MODELS_DIR) + "/" + name + ".json");
  return nlohmann::json::parse(in);
}

struct Flags {
  std::string model = "niid_cnn", device = "cpu", precision = "fp32";
  int workers = 1, steps = 40, batch = 256, rank = 0, port = 0, threads = 1;
};

Flags Parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") f.model = v;
    else if (k == "--device") f.device = v;
    else if (k == "--precision") f.precision = v;
    else if (k == "--workers") f.workers = std::stoi(v);
    else if (k == "--steps") f.steps = std::stoi(v);
    else if (k == "--batch") f.batch = std::stoi(v);
    else if (k == "--threads") f.threads = std::stoi(v);
    else if (k == "--rank") f.rank = std::stoi(v);
    else if (k == "--port") f.port = std::stoi(v);
  }
  return f;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "data_parallel_bench: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = Parse(argc, argv);
  training::SetTrainingThreads(f.threads);
  absl::StatusOr<training::ModelSpec> spec = training::ParseModelSpec(ModelConfig(f.model));
  if (!spec.ok()) return Fail(spec.status());
  absl::StatusOr<training::Dataset> all =
      training::ReadDataset("fashion-mnist", COHORT_FASHION_MNIST_DIR, training::Split::kTrain, "label");
  if (!all.ok()) return Fail(all.status());
  training::Dataset train = all->Head(static_cast<size_t>(f.batch) * static_cast<size_t>(f.steps));

  training::GroupOptions group_options;
  group_options.world_size = f.workers;
  group_options.rank = f.rank;
  group_options.master_port = static_cast<uint16_t>(f.port);
  std::unique_ptr<training::Rendezvous> rendezvous;
  std::unique_ptr<training::Collective> group;
  std::vector<pid_t> children;
  if (f.workers > 1) {
    if (f.rank == 0) {
      auto listening = training::ListenForWorkers(group_options);
      if (!listening.ok()) return Fail(listening.status());
      rendezvous = std::move(*listening);
      group_options.master_port = rendezvous->port();
      for (int r = 1; r < f.workers; ++r) {
        const pid_t pid = fork();
        if (pid == 0) {
          std::vector<std::string> args(argv, argv + argc);
          args.insert(args.end(), {"--rank", std::to_string(r), "--port", std::to_string(group_options.master_port)});
          std::vector<char*> raw;
          for (std::string& a : args) raw.push_back(a.data());
          raw.push_back(nullptr);
          execv("/proc/self/exe", raw.data());
          _exit(127);
        }
        children.push_back(pid);
      }
    }
    auto joined = training::JoinGlooGroup(group_options, rendezvous.get());
    if (!joined.ok()) return Fail(joined.status());
    group = std::move(*joined);
    if (f.rank > 0) {
      training::TrainerOptions options;
      options.device = f.device;
      options.group = group.get();
      const absl::Status s = training::RunFollower(std::move(train), 1, options);
      return s.ok() ? 0 : Fail(s);
    }
  }
  training::TrainerOptions options;
  options.device = f.device;
  options.group = group.get();
  auto trainer = training::LocalTrainer::Create(*spec, std::move(train), training::Dataset{}, 1, options);
  if (!trainer.ok()) return Fail(trainer.status());
  core::TrainingConfig config;
  config.batch_size = f.batch;
  config.learning_rate = 0.01;
  config.momentum = 0.9;
  config.precision = f.precision;
  config.threads = f.threads;
  absl::StatusOr<core::ParameterSet> global = training::InitialParameters(*spec, 1);
  if (!global.ok()) return Fail(global.status());
  // Round 1 warms up (allocations, autocast, device transfer); round 2 is measured.
  double seconds = 0;
  for (uint64_t round = 1; round <= 2; ++round) {
    const auto started = std::chrono::steady_clock::now();
    auto result = (*trainer)->TrainRound(*global, config, round, 2);
    if (!result.ok()) return Fail(result.status());
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }
  trainer->reset();  // stops the followers
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  const double samples = static_cast<double>(f.batch) * f.steps;
  std::printf("model=%s device=%s precision=%s workers=%d threads=%d batch=%d steps=%d seconds=%.3f samples_per_s=%.1f\n",
              f.model.c_str(), f.device.c_str(), f.precision.c_str(), f.workers, f.threads, f.batch, f.steps, seconds,
              samples / seconds);
  return 0;
}
