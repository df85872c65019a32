// The training layer through its narrow interface (trainer.h, state_dict_io.h) on the real
// Fashion-MNIST. This file includes no LibTorch header; the library does.
#include "training/trainer.h"

#include <sys/wait.h>
#include <zlib.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/temp_dir.h"
#include "training/data_readers.h"
#include "training/state_dict_io.h"

namespace cohort::training {
namespace {

using ::testing::HasSubstr;
using cohort::testing::TempDir;
using json = nlohmann::json;

const std::string kFashionMnistDir = COHORT_FASHION_MNIST_DIR;
const std::string kModelsDir = COHORT_MODELS_DIR;
constexpr char kPython[] = "/usr/bin/python3";

ModelSpec LoadSpec(const std::string& name) {
  std::ifstream in(kModelsDir + "/" + name);
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(json::parse(in));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

// Runs a shell command and returns its stdout and exit status.
std::pair<std::string, int> RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {"", -1};
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Scripts start with this, so that a Python without torch exits with kNoTorch instead of
// failing, and each test pays for one torch import only.
constexpr char kImportTorch[] =
    "import sys\n"
    "try:\n"
    "    import numpy, torch\n"
    "except ImportError:\n"
    "    sys.exit(77)\n";
constexpr int kNoTorch = 77;

uint32_t Crc32Of(const core::ParameterSet& set) {
  const auto bytes = set.bytes();
  return static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

void AddInPlace(core::ParameterSet& to, const core::ParameterSet& delta) {
  std::span<float> t = to.floats();
  std::span<const float> d = delta.floats();
  ASSERT_EQ(t.size(), d.size());
  for (size_t i = 0; i < t.size(); ++i) t[i] += d[i];
}

// The real data: the first 2,000 training examples and the first 1,000 test examples
// (held out). The training split is read only by the tests that train, since ctest runs
// every test in its own process.
class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One thread: the tests run beside other work on two cores, where a second OpenMP
    // thread spins instead of helping.
    SetTrainingThreads(1);
  }
  static void TearDownTestSuite() {
    delete train_;
    delete eval_;
    train_ = eval_ = nullptr;
  }
  void SetUp() override {
    if (eval_ == nullptr) {
      absl::StatusOr<Dataset> test = ReadFashionMnist(kFashionMnistDir, Split::kTest);
      ASSERT_TRUE(test.ok()) << test.status();
      eval_ = new Dataset(test->Head(1000));
    }
    cnn_ = LoadSpec("niid_cnn.json");
  }
  static const Dataset& Train() {
    if (train_ == nullptr) {
      absl::StatusOr<Dataset> train = ReadFashionMnist(kFashionMnistDir, Split::kTrain);
      EXPECT_TRUE(train.ok()) << train.status();
      train_ = new Dataset(train.ok() ? train->Head(2000) : Dataset{});
    }
    return *train_;
  }

  static core::TrainingConfig SgdConfig() {
    core::TrainingConfig c;
    c.optimizer = "sgd";
    c.learning_rate = 0.05;
    c.momentum = 0.9;
    c.batch_size = 32;
    c.local_epochs = 1;
    return c;
  }

  static Dataset* train_;
  static Dataset* eval_;
  ModelSpec cnn_;
};
Dataset* TrainerTest::train_ = nullptr;
Dataset* TrainerTest::eval_ = nullptr;

TEST_F(TrainerTest, InitialParametersFollowTheSpecsManifest) {
  // The torch module and ModelSpec agree on names, order and shapes, for every layer kind.
  const json mixed = json::parse(R"({"input_shape": [1, 28, 28], "num_classes": 10,
    "layers": [{"type": "normalize", "mean": 0.5, "std": 0.5},
               {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1, "bias": false},
               {"type": "gelu"}, {"type": "avg_pool2d", "kernel_size": 2}, {"type": "flatten"},
               {"type": "layer_norm"}, {"type": "dropout", "p": 0.2}, {"type": "linear", "out_features": 16},
               {"type": "tanh"}, {"type": "linear", "out_features": 10, "bias": false}, {"type": "sigmoid"}]})");
  absl::StatusOr<ModelSpec> mixed_spec = ParseModelSpec(mixed);
  ASSERT_TRUE(mixed_spec.ok()) << mixed_spec.status();
  for (const ModelSpec& spec : {cnn_, LoadSpec("mlp.json"), *mixed_spec}) {
    SCOPED_TRACE(spec.config.dump());
    absl::StatusOr<core::ParameterSet> init = InitialParameters(spec, 1);
    ASSERT_TRUE(init.ok()) << init.status();
    const absl::Status same = spec.ParameterManifest().CheckSameAs(init->manifest());
    EXPECT_TRUE(same.ok()) << same;
    EXPECT_EQ(init->bytes().size(), static_cast<size_t>(spec.num_parameters()) * 4);
    // The values are an initialization, not zeros.
    size_t zeros = 0;
    for (float v : init->floats()) zeros += v == 0.0f;
    EXPECT_LT(zeros, init->floats().size() / 10);
  }
}

TEST_F(TrainerTest, InitialParametersAreReproducibleBySeed) {
  absl::StatusOr<core::ParameterSet> a = InitialParameters(cnn_, 7);
  absl::StatusOr<core::ParameterSet> b = InitialParameters(cnn_, 7);
  absl::StatusOr<core::ParameterSet> c = InitialParameters(cnn_, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(std::memcmp(a->bytes().data(), b->bytes().data(), a->bytes().size()), 0);
  EXPECT_NE(std::memcmp(a->bytes().data(), c->bytes().data(), a->bytes().size()), 0);
}

TEST_F(TrainerTest, TheInitialModelIsNearChance) {
  absl::StatusOr<core::ParameterSet> init = InitialParameters(cnn_, 1);
  ASSERT_TRUE(init.ok());
  absl::StatusOr<core::EvalMetrics> m = Evaluate(cnn_, *init, *eval_, 256);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->samples, 1000u);
  EXPECT_GT(m->accuracy, 0.02);
  EXPECT_LT(m->accuracy, 0.25);
  EXPECT_NEAR(m->loss, std::log(10.0), 0.3) << "cross-entropy of a near-uniform guess over 10 classes";
}

TEST_F(TrainerTest, FederatedRoundsOnRealDataLowerTheLossAndPassSixtyPercent) {
  absl::StatusOr<core::ParameterSet> init = InitialParameters(cnn_, 1);
  ASSERT_TRUE(init.ok());
  absl::StatusOr<core::EvalMetrics> before = Evaluate(cnn_, *init, *eval_);
  ASSERT_TRUE(before.ok());

  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(cnn_, Train(), *eval_, 3);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ((*trainer)->num_train_examples(), 2000u);
  core::ParameterSet global = *init;
  const core::TrainingConfig config = SgdConfig();
  constexpr int kRounds = 3;
  // The held-out loss falls well below chance after every round and keeps falling after the
  // first at some point; it need not fall in every round: with 2,000 training rows and
  // momentum, a round can overfit them, and whether round 3 does depends on the CPU's
  // floating-point kernels (the same build gives 0.799 -> 0.858 on one Xeon).
  double first_loss = 0, best_loss = before->loss;
  for (int round = 1; round <= kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(global, config, round, kRounds);
    ASSERT_TRUE(result.ok()) << result.status();
    const core::TrainMetrics& m = result->metrics;
    EXPECT_EQ(m.steps, 63u) << "ceil(2000 / 32) steps per epoch";
    EXPECT_EQ(m.train_samples, 2000u);
    EXPECT_EQ(m.eval_samples, 1000u);
    EXPECT_GT(m.train_loss, 0.0);
    ASSERT_TRUE(result->delta.manifest() == global.manifest());
    AddInPlace(global, result->delta);
    absl::StatusOr<core::EvalMetrics> after = Evaluate(cnn_, global, *eval_);
    ASSERT_TRUE(after.ok());
    EXPECT_LT(after->loss, before->loss * 0.6) << "held-out loss did not go down from chance";
    if (round == 1) first_loss = after->loss;
    best_loss = std::min(best_loss, after->loss);
    RecordProperty("held_out_accuracy_round_" + std::to_string(round), std::to_string(after->accuracy));
    RecordProperty("held_out_loss_round_" + std::to_string(round), std::to_string(after->loss));
    if (round == kRounds) {
      EXPECT_GT(after->accuracy, 0.6);
      EXPECT_LT(after->loss, before->loss * 0.5);
    }
  }
  EXPECT_LT(best_loss, first_loss) << "no round after the first lowered the held-out loss";
}

TEST_F(TrainerTest, TheDeltaIsTrainedMinusGlobal) {
  absl::StatusOr<core::ParameterSet> init = InitialParameters(cnn_, 2);
  ASSERT_TRUE(init.ok());
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(cnn_, Train().Head(500), *eval_, 5);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*init, SgdConfig(), 1, 1);
  ASSERT_TRUE(result.ok()) << result.status();
  // The trainer measured its trained model on the held-out split; global + delta must be
  // that same model, so evaluating it gives the same numbers.
  core::ParameterSet trained = *init;
  AddInPlace(trained, result->delta);
  absl::StatusOr<core::EvalMetrics> m = Evaluate(cnn_, trained, *eval_, SgdConfig().eval_batch_size);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_NEAR(m->loss, result->metrics.eval_loss, 1e-4);
  EXPECT_NEAR(m->accuracy, result->metrics.eval_accuracy, 0.0015);
  // And the delta is not zero: training moved the model.
  double norm = 0;
  for (float v : result->delta.floats()) norm += static_cast<double>(v) * v;
  EXPECT_GT(norm, 1e-4);
}

TEST_F(TrainerTest, TheSameSeedTrainsTheSameModel) {
  absl::StatusOr<core::ParameterSet> init = InitialParameters(cnn_, 2);
  ASSERT_TRUE(init.ok());
  core::TrainingConfig config = SgdConfig();
  config.max_steps_per_round = 5;
  std::vector<uint32_t> crcs;
  for (int run = 0; run < 2; ++run) {
    absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(cnn_, Train().Head(300), Dataset{}, 9);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*init, config, 1, 1);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->metrics.steps, 5u) << "max_steps_per_round caps the round";
    EXPECT_EQ(result->metrics.eval_samples, 0u) << "no held-out split, no evaluation";
    crcs.push_back(Crc32Of(result->delta));
  }
  EXPECT_EQ(crcs[0], crcs[1]);
}

TEST_F(TrainerTest, DataOfAnotherShapeIsRefusedWithBothShapes) {
  const json cifar = json::parse(R"({"input_shape": [3, 32, 32], "num_classes": 10,
    "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}]})");
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(cifar);
  ASSERT_TRUE(spec.ok());
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(*spec, eval_->Head(10), Dataset{}, 1);
  ASSERT_FALSE(trainer.ok());
  EXPECT_EQ(trainer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(trainer.status().message()),
              HasSubstr("training data has examples of shape [1, 28, 28] but model_config.input_shape is [3, 32, 32]"));

  absl::StatusOr<core::ParameterSet> params = InitialParameters(*spec, 1);
  ASSERT_TRUE(params.ok());
  absl::StatusOr<core::EvalMetrics> m = Evaluate(*spec, *params, *eval_);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("[1, 28, 28]"));
}

TEST_F(TrainerTest, DataWithMoreClassesThanTheModelOutputsIsRefused) {
  const json five = json::parse(R"({"input_shape": [1, 28, 28], "num_classes": 5,
    "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 5}]})");
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(five);
  ASSERT_TRUE(spec.ok());
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(*spec, eval_->Head(10), Dataset{}, 1);
  ASSERT_FALSE(trainer.ok());
  EXPECT_THAT(std::string(trainer.status().message()), HasSubstr("10 classes but the model outputs 5"));
}

TEST_F(TrainerTest, EmptyTrainingDataIsRefused) {
  Dataset empty = eval_->Head(1);
  empty.labels.clear();
  empty.features.clear();
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(cnn_, empty, Dataset{}, 1);
  ASSERT_FALSE(trainer.ok());
  EXPECT_THAT(std::string(trainer.status().message()), HasSubstr("empty"));
}

TEST_F(TrainerTest, AGlobalModelOfAnotherLayoutIsRefusedNamingTheTensor) {
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(cnn_, eval_->Head(64), Dataset{}, 1);
  ASSERT_TRUE(trainer.ok());
  absl::StatusOr<core::ParameterSet> mlp = InitialParameters(LoadSpec("mlp.json"), 1);
  ASSERT_TRUE(mlp.ok());
  absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*mlp, SgdConfig(), 1, 1);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("parameter tensors"));

  // Same tensor count, one shape different.
  std::vector<core::TensorSpec> tensors = cnn_.ParameterManifest().tensors();
  tensors[2].shape = {16, 6, 3, 3};
  absl::StatusOr<RoundResult> reshaped =
      (*trainer)->TrainRound(core::ParameterSet(core::Manifest(tensors)), SgdConfig(), 1, 1);
  ASSERT_FALSE(reshaped.ok());
  EXPECT_THAT(std::string(reshaped.status().message()), HasSubstr("layers.4.weight"));
}

TEST(StateDictTest, WriteThenReadRoundTripsExactly) {
  TempDir dir;
  const ModelSpec spec = LoadSpec("niid_cnn.json");
  absl::StatusOr<core::ParameterSet> params = InitialParameters(spec, 11);
  ASSERT_TRUE(params.ok());
  const std::string path = (dir.path() / "model.pt").string();
  ASSERT_TRUE(WriteStateDict(*params, path).ok());
  absl::StatusOr<core::ParameterSet> read = ReadStateDict(path);
  ASSERT_TRUE(read.ok()) << read.status();
  const absl::Status same = params->manifest().CheckSameAs(read->manifest());
  EXPECT_TRUE(same.ok()) << same;
  ASSERT_EQ(read->bytes().size(), params->bytes().size());
  EXPECT_EQ(std::memcmp(read->bytes().data(), params->bytes().data(), params->bytes().size()), 0);
}

// The archive streams into the file with its tensors viewing the set's bytes: a model of
// many writer buffers (24 MB in three tensors, one over 16 MB) comes back bit for bit,
// and the file holds the model once (plus its small index), not a second copy.
TEST(StateDictTest, AModelOfManyMegabytesStreamsToAFileThatReadsBackExactly) {
  TempDir dir;
  core::ParameterSet model(core::Manifest({{"layers.0.weight", core::DType::kFloat32, {2048, 2100}},
                                           {"layers.0.bias", core::DType::kFloat32, {2048}},
                                           {"layers.2.weight", core::DType::kFloat32, {10, 2048}}}));
  std::span<float> values = model.floats();
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(std::sin(static_cast<double>(i)));
  const std::string path = (dir.path() / "model.pt").string();
  ASSERT_TRUE(WriteStateDict(model, path).ok());
  const uintmax_t size = std::filesystem::file_size(path);
  EXPECT_GE(size, model.bytes().size());
  EXPECT_LT(size, model.bytes().size() + (1u << 20));
  absl::StatusOr<core::ParameterSet> read = ReadStateDict(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(model.manifest().CheckSameAs(read->manifest()).ok());
  ASSERT_EQ(read->bytes().size(), model.bytes().size());
  EXPECT_EQ(std::memcmp(read->bytes().data(), model.bytes().data(), model.bytes().size()), 0);
}

TEST(StateDictTest, NonFloatTensorsAndUnreadableFilesAreRefused) {
  TempDir dir;
  core::ParameterSet ints(core::Manifest({{"steps", core::DType::kInt64, {1}}}));
  const absl::Status s = WriteStateDict(ints, (dir.path() / "ints.pt").string());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("steps"));

  EXPECT_EQ(ReadStateDict((dir.path() / "absent.pt").string()).status().code(), absl::StatusCode::kNotFound);
  const std::string garbage = (dir.path() / "garbage.pt").string();
  std::ofstream(garbage) << "this is not a zip archive";
  absl::StatusOr<core::ParameterSet> bad = ReadStateDict(garbage);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(garbage));
}

TEST(StateDictTest, PythonTorchLoadsTheFileWithWeightsOnly) {
  TempDir dir;
  const ModelSpec spec = LoadSpec("niid_cnn.json");
  absl::StatusOr<core::ParameterSet> params = InitialParameters(spec, 12);
  ASSERT_TRUE(params.ok());
  const std::string path = (dir.path() / "model.pt").string();
  ASSERT_TRUE(WriteStateDict(*params, path).ok());

  // Prints each key with its shape, then a CRC-32 over every tensor's bytes in order.
  const std::string script = std::string(kImportTorch) +
      "import zlib\n"
      "d = torch.load(sys.argv[1], weights_only=True)\n"
      "assert type(d) is dict, type(d)\n"
      "for k, v in d.items():\n"
      "    assert v.dtype == torch.float32, (k, v.dtype)\n"
      "    print(k, list(v.shape))\n"
      "data = b''.join(v.contiguous().numpy().tobytes() for v in d.values())\n"
      "print('crc32', zlib.crc32(data))\n";
  const std::string script_path = (dir.path() / "check.py").string();
  std::ofstream(script_path) << script;
  const auto [out, rc] = RunCommand(std::string(kPython) + " " + script_path + " " + path + " 2>&1");
  if (rc == kNoTorch) GTEST_SKIP() << kPython << " cannot import torch and numpy; install python3-torch";
  ASSERT_EQ(rc, 0) << out;

  std::ostringstream expected;
  for (const core::TensorSpec& t : params->manifest().tensors()) {
    expected << t.name << " [";
    for (size_t i = 0; i < t.shape.size(); ++i) expected << (i ? ", " : "") << t.shape[i];
    expected << "]\n";
  }
  expected << "crc32 " << Crc32Of(*params) << "\n";
  EXPECT_EQ(out, expected.str());
}

TEST(StateDictTest, ReadsAStateDictThatPythonSaved) {
  TempDir dir;
  const std::string path = (dir.path() / "python.pt").string();
  const std::string script = std::string(kImportTorch) +
      "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))\n"
      "with torch.no_grad():\n"
      "    m[1].weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4)\n"
      "    m[1].bias.copy_(torch.tensor([-1.5, 2.25]))\n"
      "torch.save(dict(m.state_dict()), sys.argv[1])\n";
  const std::string script_path = (dir.path() / "save.py").string();
  std::ofstream(script_path) << script;
  const auto [out, rc] = RunCommand(std::string(kPython) + " " + script_path + " " + path + " 2>&1");
  if (rc == kNoTorch) GTEST_SKIP() << kPython << " cannot import torch and numpy; install python3-torch";
  ASSERT_EQ(rc, 0) << out;

  absl::StatusOr<core::ParameterSet> read = ReadStateDict(path);
  ASSERT_TRUE(read.ok()) << read.status();
  const core::Manifest expected({{"1.weight", core::DType::kFloat32, {2, 3}}, {"1.bias", core::DType::kFloat32, {2}}});
  EXPECT_TRUE(expected.CheckSameAs(read->manifest()).ok()) << expected.CheckSameAs(read->manifest());
  const std::vector<float> values(read->floats().begin(), read->floats().end());
  EXPECT_EQ(values, (std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, -1.5f, 2.25f}));
}

}  // namespace
}  // namespace cohort::training
