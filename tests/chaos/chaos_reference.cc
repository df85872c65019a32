// The fault-free reference of a chaos run (scripts/chaos.py, docs/reliability.md "Chaos"):
// replays the job in one process through the same library functions the processes of the
// run use, with the participants of each round read from the run's summary.json, and
// compares the result with the run's final model.
//
//   cohort_chaos_reference --job JOB.json --summary OUT/summary.json --model OUT/model.pt
//       --clients K --dp-sgd-seed-base B [--tolerance 1e-4]
//
// Each site i of K is built as `cohort client --shard i/K --seed job.seed` builds it (the
// job's train_subset, partition and eval_fraction; training seed job.seed + i; DP-SGD seed
// B + i), trains every round it took part in from the previous global model
// (training::LocalTrainer::TrainRound), and the round's deltas are averaged as the server
// averages them (core::FoldWeighted) with the server's weights: the sample count each site
// declared, capped by water-filling at federation.max_weight_share
// (server::WeightCapThreshold, server::EffectiveWeightShare).
// Prints the largest absolute difference to the run's model; exit 0 when it is within the
// tolerance, 1 when not, 2 on bad input.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/fedavg.h"
#include "core/job_config.h"
#include "server/weight_cap.h"
#include "training/data_readers.h"
#include "training/model_spec.h"
#include "training/partition.h"
#include "training/state_dict_io.h"
#include "training/trainer.h"

namespace cohort {
namespace {

struct Flags {
  std::string job, summary, model;
  int clients = 0;
  uint64_t dp_sgd_seed_base = 0;
  double tolerance = 1e-4;
  // Folds each round's updates in the reverse of the order above: how far the final model
  // moves with the order of the folds alone, beside how far it is from the run's.
  bool reversed = false;
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i], value = argv[i + 1];
    bool ok = true;
    if (name == "--job") f.job = value;
    else if (name == "--summary") f.summary = value;
    else if (name == "--model") f.model = value;
    else if (name == "--clients") ok = absl::SimpleAtoi(value, &f.clients);
    else if (name == "--dp-sgd-seed-base") ok = absl::SimpleAtoi(value, &f.dp_sgd_seed_base);
    else if (name == "--tolerance") ok = absl::SimpleAtod(value, &f.tolerance);
    else if (name == "--fold-order") {
      ok = value == "summary" || value == "reversed";
      f.reversed = value == "reversed";
    }
    else return absl::InvalidArgumentError(absl::StrCat("unknown flag ", name));
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(name, ": not a number: ", value));
  }
  if (f.job.empty() || f.summary.empty() || f.model.empty() || f.clients < 1) {
    return absl::InvalidArgumentError(
        "usage: cohort_chaos_reference --job JOB.json --summary SUMMARY.json --model MODEL.pt --clients K "
        "--dp-sgd-seed-base B [--tolerance T] [--fold-order summary|reversed]");
  }
  return f;
}

// One site as `cohort client --shard index/count` builds it.
struct Site {
  std::unique_ptr<training::LocalTrainer> trainer;
  double samples = 0;
};

absl::StatusOr<std::map<std::string, Site>> BuildSites(const core::JobConfig& job, const training::ModelSpec& spec,
                                                      const Flags& f) {
  absl::StatusOr<training::Dataset> data =
      training::ReadDataset(job.data.dataset, job.data.path, training::Split::kTrain, job.data.label_column);
  if (!data.ok()) return data.status();
  const training::Dataset all = data->Head(static_cast<size_t>(job.data.train_subset));
  absl::StatusOr<training::Shards> shards =
      training::Partition(job.data.partition, all.labels, all.num_classes, f.clients, job.seed);
  if (!shards.ok()) return shards.status();
  std::map<std::string, Site> sites;
  for (int i = 0; i < f.clients; ++i) {
    const uint64_t seed = job.seed + static_cast<uint64_t>(i);
    const training::HoldoutSplit split =
        training::SplitHoldout((*shards)[static_cast<size_t>(i)], job.data.eval_fraction, seed);
    training::TrainerOptions options;
    options.dp_sgd_seed_for_tests = f.dp_sgd_seed_base + static_cast<uint64_t>(i);
    absl::StatusOr<std::unique_ptr<training::LocalTrainer>> trainer =
        training::LocalTrainer::Create(spec, all.Subset(split.train), all.Subset(split.eval), seed, options);
    if (!trainer.ok()) return trainer.status();
    Site site;
    site.samples = static_cast<double>(split.train.size());
    site.trainer = std::move(*trainer);
    sites.emplace(absl::StrCat("site-", i), std::move(site));
  }
  return sites;
}

int Run(int argc, char** argv) {
  absl::StatusOr<Flags> f = ParseFlags(argc, argv);
  absl::StatusOr<core::JobConfig> job = f.ok() ? core::LoadJobConfig(f->job) : absl::StatusOr<core::JobConfig>(f.status());
  absl::StatusOr<training::ModelSpec> spec =
      job.ok() ? training::ParseModelSpec(job->model_config) : absl::StatusOr<training::ModelSpec>(job.status());
  absl::StatusOr<nlohmann::json> summary =
      spec.ok() ? core::ReadBoundedJsonFile(f->summary, core::kCheckpointHeaderJson, "summary")
                : absl::StatusOr<nlohmann::json>(spec.status());
  if (!summary.ok()) {
    std::fprintf(stderr, "chaos reference: %s\n", std::string(summary.status().message()).c_str());
    return 2;
  }
  training::SetTrainingThreads(1);
  absl::StatusOr<std::map<std::string, Site>> sites = BuildSites(*job, *spec, *f);
  absl::StatusOr<core::ParameterSet> global = sites.ok() ? training::InitialParameters(*spec, job->seed)
                                                         : absl::StatusOr<core::ParameterSet>(sites.status());
  absl::StatusOr<core::ParameterSet> run_model =
      global.ok() ? training::ReadStateDict(f->model) : absl::StatusOr<core::ParameterSet>(global.status());
  if (!run_model.ok()) {
    std::fprintf(stderr, "chaos reference: %s\n", std::string(run_model.status().message()).c_str());
    return 2;
  }
  const uint64_t total_rounds = static_cast<uint64_t>(job->federation.rounds);
  for (const nlohmann::json& round : (*summary)["rounds"]) {
    const uint64_t r = round["round"].get<uint64_t>();
    std::vector<std::string> names;
    std::vector<double> weights;
    std::vector<core::ParameterSet> deltas;
    // In the order the server's fold took them (aggregation.fold_order), when recorded: the
    // float32 sums then match the run's; the summary's own order is sorted by name.
    std::vector<nlohmann::json> clients(round["clients"].begin(), round["clients"].end());
    if (round.contains("aggregation") && round["aggregation"].contains("fold_order")) {
      std::map<std::string, size_t> position;
      for (const nlohmann::json& site : round["aggregation"]["fold_order"]) {
        position.emplace(site.get<std::string>(), position.size());
      }
      std::stable_sort(clients.begin(), clients.end(), [&position](const nlohmann::json& a, const nlohmann::json& b) {
        auto rank = [&position](const nlohmann::json& c) {
          auto it = position.find(c["site"].get<std::string>());
          return it == position.end() ? position.size() : it->second;
        };
        return rank(a) < rank(b);
      });
    }
    for (const nlohmann::json& client : clients) {
      const std::string name = client["site"].get<std::string>();
      auto it = sites->find(name);
      if (it == sites->end()) {
        std::fprintf(stderr, "chaos reference: round %llu names an unknown site %s\n",
                     static_cast<unsigned long long>(r), name.c_str());
        return 2;
      }
      if (client["samples"].get<double>() != it->second.samples) {
        std::fprintf(stderr, "chaos reference: round %llu: %s declared %g samples, the replay has %g\n",
                     static_cast<unsigned long long>(r), name.c_str(), client["samples"].get<double>(),
                     it->second.samples);
        return 1;
      }
      absl::StatusOr<training::RoundResult> trained =
          it->second.trainer->TrainRound(*global, job->training, r, total_rounds, job->privacy);
      if (!trained.ok()) {
        std::fprintf(stderr, "chaos reference: round %llu %s: %s\n", static_cast<unsigned long long>(r), name.c_str(),
                     std::string(trained.status().message()).c_str());
        return 2;
      }
      names.push_back(name);
      weights.push_back(it->second.samples);
      deltas.push_back(std::move(trained->delta));
    }
    if (deltas.empty()) continue;
    const double cap = server::WeightCapThreshold(
        weights, server::EffectiveWeightShare(job->federation.max_weight_share, weights.size()));
    // As core::StreamingFedAvg does it: acc += w_k * delta_k (core::FoldWeighted, float), then
    // global += acc / sum(w_k). Only the order of the folds differs from the server's.
    double total = 0;
    std::vector<core::WeightedInput> inputs;
    for (size_t k = 0; k < deltas.size(); ++k) {
      const double w = std::min(weights[k], cap);
      total += w;
      inputs.push_back({static_cast<float>(w), deltas[k].floats().data()});
    }
    if (f->reversed) std::reverse(inputs.begin(), inputs.end());
    std::span<float> g = global->floats();
    std::vector<float> acc(g.size(), 0.0f);
    core::FoldWeighted(acc, inputs, 1);
    const float scale = static_cast<float>(1.0 / total);
    for (size_t i = 0; i < g.size(); ++i) g[i] += acc[i] * scale;
    std::printf("reference round %llu: %zu sites\n", static_cast<unsigned long long>(r), names.size());
  }
  std::span<const float> want = global->floats();
  std::span<const float> got = run_model->floats();
  if (want.size() != got.size()) {
    std::fprintf(stderr, "chaos reference: the run's model has %zu floats, the replay %zu\n", got.size(), want.size());
    return 1;
  }
  double max_abs = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(want[i]) - static_cast<double>(got[i]));
    if (!(diff <= max_abs)) max_abs = diff;  // NaN propagates as a failure
  }
  const bool ok = max_abs <= f->tolerance;
  std::printf("final model max abs difference %.3g (tolerance %.3g): %s\n", max_abs, f->tolerance,
              ok ? "equal" : "DIFFERENT");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace cohort

int main(int argc, char** argv) { return cohort::Run(argc, argv); }
