// In-process split learning (training/split_in_process.h): training samples per second and
// held-out accuracy when the bottoms and the top are called directly, with no network. The
// baseline a networked vertical job is compared with.
//   fmnist          Fashion-MNIST cut into left and right halves (columns 0-14 | 14-28),
//                   the left party holding the labels; bottoms configs/models/
//                   vertical_fmnist_bottom_half.json, top vertical_fmnist_top.json
//   breast_cancer   the two party files of scripts/make_vertical_data.sh, aligned by id;
//                   vertical_breast_cancer_{bottom_bank,bottom_clinic,top}.json
//
//   cohort_split_bench [--task fmnist|breast_cancer|all] [--epochs N] [--rows N] [--threads N]
//                      [--optimizer adam] [--lr X] [--momentum X] [--weight-decay X] [--batch N]
//                      [--seed N] [--eval-each-epoch]
//                      [--fmnist DIR] [--vertical DIR] [--models DIR]
// --rows caps the Fashion-MNIST rows read (0: all 70,000; 1/7 of them are held out).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "training/split_in_process.h"
#include "training/trainer.h"
#include "training/vertical_data.h"

namespace {

using namespace cohort::training;

struct Flags {
  std::string task = "all";
  int64_t epochs = 1;
  int64_t rows = 6000;
  int threads = 1;
  std::string optimizer = "adam";
  double lr = 0.001;
  double momentum = 0;
  double weight_decay = 0;
  int64_t batch = 64;
  uint64_t seed = 1;
  bool eval_each_epoch = false;
  std::string fmnist = COHORT_FASHION_MNIST_DIR;
  std::string vertical = COHORT_SOURCE_DIR "/data/vertical";
  std::string models = COHORT_MODELS_DIR;
};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "cohort_split_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T OrFail(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(std::string(value.status().message()));
  return std::move(*value);
}

ModelSpec LoadModel(const Flags& flags, const std::string& name) {
  std::ifstream in(flags.models + "/" + name);
  if (!in) Fail("cannot open " + flags.models + "/" + name);
  return OrFail(ParseModelSpec(nlohmann::json::parse(in)));
}

void Report(const char* task, const Flags& flags, const SplitInProcessResult& r) {
  const double samples = static_cast<double>(r.train_rows) * static_cast<double>(flags.epochs);
  std::printf("%-14s threads=%d optimizer=%s lr=%g momentum=%g weight_decay=%g batch=%lld epochs=%lld seed=%llu "
              "train_rows=%lld eval_rows=%lld\n",
              task, flags.threads, flags.optimizer.c_str(), flags.lr, flags.momentum, flags.weight_decay,
              static_cast<long long>(flags.batch),
              static_cast<long long>(flags.epochs), static_cast<unsigned long long>(flags.seed),
              static_cast<long long>(r.train_rows),
              static_cast<long long>(r.eval_rows));
  for (size_t e = 0; e < r.epoch_eval_accuracy.size(); ++e) {
    std::printf("%-14s epoch %zu held-out accuracy %.4f\n", task, e + 1, r.epoch_eval_accuracy[e]);
  }
  std::printf("%-14s %.0f samples/s (%.1f s training), last epoch loss %.4f, held-out loss %.4f accuracy %.4f\n", task,
              samples / r.train_seconds, r.train_seconds, r.last_epoch_train_loss, r.eval_loss, r.eval_accuracy);
  std::fflush(stdout);
}

SplitInProcessOptions Options(const Flags& flags, double eval_fraction) {
  SplitInProcessOptions options;
  options.training.optimizer = flags.optimizer;
  options.training.learning_rate = flags.lr;
  options.training.momentum = flags.momentum;
  options.training.weight_decay = flags.weight_decay;
  options.training.batch_size = flags.batch;
  options.epochs = flags.epochs;
  options.eval_fraction = eval_fraction;
  options.seed = flags.seed;
  options.evaluate_each_epoch = flags.eval_each_epoch;
  return options;
}

void RunFashionMnist(const Flags& flags) {
  VerticalDataSpec left;
  left.dataset = "fashion-mnist";
  left.path = flags.fmnist;
  left.split = "all";
  left.column_begin = 0;
  left.column_end = 14;
  left.label_column = "label";
  left.max_rows = flags.rows;
  VerticalDataSpec right = left;
  right.column_begin = 14;
  right.column_end = 28;
  right.label_column = "";
  std::vector<VerticalTable> tables = {OrFail(ReadVerticalTable(left)), OrFail(ReadVerticalTable(right))};
  const ModelSpec bottom = LoadModel(flags, "vertical_fmnist_bottom_half.json");
  const SplitInProcessResult result = OrFail(TrainSplitInProcess(
      tables, 0, {bottom, bottom}, LoadModel(flags, "vertical_fmnist_top.json"), Options(flags, 1.0 / 7.0)));
  Report("fmnist-halves", flags, result);
}

void RunBreastCancer(const Flags& flags) {
  std::vector<VerticalTable> tables;
  for (const char* party : {"bank", "clinic"}) {
    VerticalDataSpec spec;
    spec.path = flags.vertical + "/breast_cancer/" + party + ".csv";
    if (std::strcmp(party, "bank") == 0) spec.label_column = "diagnosis";
    absl::StatusOr<VerticalTable> table = ReadVerticalTable(spec);
    if (!table.ok()) Fail(std::string(table.status().message()) + " (run scripts/make_vertical_data.sh)");
    tables.push_back(std::move(*table));
  }
  tables = IntersectByIdentifier(tables);
  const SplitInProcessResult result = OrFail(TrainSplitInProcess(
      tables, 0,
      {LoadModel(flags, "vertical_breast_cancer_bottom_bank.json"),
       LoadModel(flags, "vertical_breast_cancer_bottom_clinic.json")},
      LoadModel(flags, "vertical_breast_cancer_top.json"), Options(flags, 0.2)));
  Report("breast-cancer", flags, result);
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--task") flags.task = value();
    else if (arg == "--epochs") flags.epochs = std::atoll(value().c_str());
    else if (arg == "--rows") flags.rows = std::atoll(value().c_str());
    else if (arg == "--threads") flags.threads = std::atoi(value().c_str());
    else if (arg == "--optimizer") flags.optimizer = value();
    else if (arg == "--lr") flags.lr = std::atof(value().c_str());
    else if (arg == "--batch") flags.batch = std::atoll(value().c_str());
    else if (arg == "--momentum") flags.momentum = std::atof(value().c_str());
    else if (arg == "--weight-decay") flags.weight_decay = std::atof(value().c_str());
    else if (arg == "--seed") flags.seed = std::strtoull(value().c_str(), nullptr, 10);
    else if (arg == "--eval-each-epoch") flags.eval_each_epoch = true;
    else if (arg == "--fmnist") flags.fmnist = value();
    else if (arg == "--vertical") flags.vertical = value();
    else if (arg == "--models") flags.models = value();
    else Fail("unknown flag " + arg + " (see the comment at the top of split_bench.cc)");
  }
  if (flags.epochs < 1 || flags.batch < 1 || flags.threads < 1) Fail("--epochs, --batch and --threads must be >= 1");
  SetTrainingThreads(flags.threads);
  if (flags.task == "fmnist" || flags.task == "all") RunFashionMnist(flags);
  if (flags.task == "breast_cancer" || flags.task == "all") RunBreastCancer(flags);
  return 0;
}
