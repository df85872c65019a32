// A federated language model against the same model trained centrally, on the text task of
// a job config (configs/fortunes_lm.json: one fortunes category per site). In process, no
// network: every round each site trains its share of training_config.max_steps from the
// global model on its own files (partition by_file) and the deltas are averaged by
// training windows (core::FoldWeighted, FedAvg's fold); the central model trains on all the
// training text with the same training_config, for the same number of optimizer steps as
// one site (max_steps: the same sequential steps) and as all sites together (max_steps x
// sites: the same compute). Prints held-out next-token accuracy and perplexity (the server's
// evaluation.test_data split: the last windows of each file) for each.
//
//   cohort_lm_bench [--config configs/fortunes_lm.json] [--rounds N] [--max-steps N] [--threads N]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/fedavg.h"
#include "core/job_config.h"
#include "training/data_readers.h"
#include "training/partition.h"
#include "training/trainer.h"

namespace {

using namespace cohort;
using namespace cohort::training;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "cohort_lm_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(std::string(value.status().message()));
  return std::move(*value);
}

void Report(const char* what, const core::EvalMetrics& m, double seconds) {
  std::printf("%-34s next-token accuracy %6.2f%%  loss %.4f  perplexity %7.3f  (%.0f s)\n", what, 100 * m.accuracy,
              m.loss, std::exp(m.loss), seconds);
  std::fflush(stdout);
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

core::EvalMetrics TrainCentral(const ModelSpec& spec, const core::ParameterSet& initial, const Dataset& train,
                               const Dataset& test, core::TrainingConfig config, uint64_t seed) {
  auto trainer = Check(LocalTrainer::Create(spec, train, Dataset{}, seed));
  RoundResult result = Check(trainer->TrainRound(initial, config, 1, 1));
  core::ParameterSet model = initial;
  for (size_t i = 0; i < model.floats().size(); ++i) model.floats()[i] += result.delta.floats()[i];
  return Check(Evaluate(spec, model, test, config.eval_batch_size));
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = COHORT_SOURCE_DIR "/configs/fortunes_lm.json";
  int64_t rounds = -1, max_steps = -1;
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--config") {
      config_path = next();
    } else if (arg == "--rounds") {
      rounds = std::atoll(next().c_str());
    } else if (arg == "--max-steps") {
      max_steps = std::atoll(next().c_str());
    } else if (arg == "--threads") {
      threads = std::atoi(next().c_str());
    } else {
      Fail("unknown flag " + arg + " (see the comment at the top of lm_bench.cc)");
    }
  }
  core::JobConfig job = Check(core::LoadJobConfig(config_path));
  if (rounds > 0) job.federation.rounds = rounds;
  if (max_steps > 0) job.training.max_steps = max_steps;
  if (job.training.max_steps <= 0) Fail("the config needs training_config.max_steps");
  SetTrainingThreads(threads);
  const ModelSpec spec = Check(ParseModelSpec(job.model_config));
  const Dataset train = Check(ReadDataset(job.data, job.data.path, Split::kTrain));
  const Dataset test = Check(ReadDataset(job.data, job.evaluation.test_data, Split::kTest));
  const int sites = static_cast<int>(train.group_names.size());
  const Shards shards = Check(PartitionDataset(job.data.partition, train, sites, job.seed));
  const core::ParameterSet initial = Check(InitialParameters(spec, job.seed));
  std::printf("%s: %d sites (%s), %zu training windows, %zu held-out windows of %lld tokens, %lld rounds, "
              "max_steps %lld per site, %lld parameters, %d thread(s)\n",
              config_path.c_str(), sites, job.data.partition.c_str(), train.size(), test.size(),
              static_cast<long long>(job.data.sequence_length), static_cast<long long>(job.federation.rounds),
              static_cast<long long>(job.training.max_steps), static_cast<long long>(spec.num_parameters()), threads);
  Report("initial model", Check(Evaluate(spec, initial, test, job.training.eval_batch_size)), 0);

  // Federated: one trainer per site, kept across rounds as at a real site.
  auto started = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<LocalTrainer>> trainers;
  for (int s = 0; s < sites; ++s) {
    trainers.push_back(Check(LocalTrainer::Create(spec, train.Subset(shards[static_cast<size_t>(s)]), Dataset{},
                                                  job.seed + static_cast<uint64_t>(s))));
  }
  core::ParameterSet global = initial;
  const uint64_t total_rounds = static_cast<uint64_t>(job.federation.rounds);
  for (uint64_t round = 1; round <= total_rounds; ++round) {
    std::vector<RoundResult> results;
    double total = 0;
    for (auto& trainer : trainers) {
      results.push_back(Check(trainer->TrainRound(global, job.training, round, total_rounds)));
      total += static_cast<double>(trainer->num_train_examples());
    }
    std::vector<core::WeightedInput> inputs;
    for (size_t s = 0; s < results.size(); ++s) {
      inputs.push_back({static_cast<float>(static_cast<double>(trainers[s]->num_train_examples()) / total),
                        results[s].delta.floats().data()});
    }
    core::FoldWeighted(global.floats(), inputs, 1);
    if (round == total_rounds || round % 5 == 0) {
      Report(("federated, round " + std::to_string(round)).c_str(),
             Check(Evaluate(spec, global, test, job.training.eval_batch_size)), Since(started));
    }
  }

  started = std::chrono::steady_clock::now();
  Report("central, max_steps steps",
         TrainCentral(spec, initial, train, test, job.training, job.seed), Since(started));
  core::TrainingConfig all_compute = job.training;
  all_compute.max_steps *= sites;
  all_compute.warmup_steps *= sites;
  started = std::chrono::steady_clock::now();
  Report("central, max_steps x sites steps", TrainCentral(spec, initial, train, test, all_compute, job.seed),
         Since(started));
  return 0;
}
