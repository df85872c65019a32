// Transformers in the model zoo and language-model training, through the training layer's
// narrow interfaces (trainer.h, inference.h, state_dict_io.h, text_data.h): causal masking,
// logits equal to the PyTorch twin's (examples/python/cohort_models.py) for the same
// weights, next-token training on the fortunes text, and the training knobs (gradient
// accumulation, label smoothing, max_steps). This file includes no LibTorch header.
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/temp_dir.h"
#include "training/inference.h"
#include "training/state_dict_io.h"
#include "training/text_data.h"
#include "training/trainer.h"

namespace cohort::training {
namespace {

using ::testing::HasSubstr;
using cohort::testing::TempDir;
using json = nlohmann::json;

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kFortunes[] = "/usr/share/games/fortunes";
constexpr int kNoTorch = 77;

json Decoder(double dropout = 0.0) {
  return {{"num_layers", 2}, {"hidden_size", 32}, {"num_attention_heads", 4}, {"vocab_size", 259},
          {"intermediate_size", 64}, {"max_position_embeddings", 32}, {"dropout", dropout}};
}

json Encoder() {
  json config = Decoder();
  config["architecture"] = "encoder";
  config["num_classes"] = 3;
  config["pooling"] = "first";
  return config;
}

ModelSpec Spec(const json& config) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(config);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

std::vector<float> Tokens(int64_t n, int64_t t, uint32_t seed) {
  std::vector<float> tokens(static_cast<size_t>(n * t));
  for (size_t i = 0; i < tokens.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    tokens[i] = static_cast<float>((seed >> 8) % 259);
  }
  return tokens;
}

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

TEST(TransformerTest, NoPositionAttendsToALaterOne) {
  const ModelSpec spec = Spec(Decoder());
  absl::StatusOr<core::ParameterSet> params = InitialParameters(spec, 3);
  ASSERT_TRUE(params.ok()) << params.status();
  constexpr int64_t kT = 12, kV = 259;
  std::vector<float> tokens = Tokens(1, kT, 5);
  absl::StatusOr<Outputs> before = ComputeOutputs(spec, *params, tokens, {kT});
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->shape, (std::vector<int64_t>{1, kT, kV}));
  for (int64_t changed = 0; changed < kT; changed += 5) {
    std::vector<float> perturbed = tokens;
    perturbed[static_cast<size_t>(changed)] = static_cast<float>((static_cast<int>(tokens[changed]) + 100) % 259);
    absl::StatusOr<Outputs> after = ComputeOutputs(spec, *params, perturbed, {kT});
    ASSERT_TRUE(after.ok()) << after.status();
    for (int64_t t = 0; t < kT; ++t) {
      double diff = 0;
      for (int64_t v = 0; v < kV; ++v) {
        const size_t i = static_cast<size_t>(t * kV + v);
        diff = std::max(diff, static_cast<double>(std::abs(before->values[i] - after->values[i])));
      }
      if (t < changed) {
        EXPECT_LT(diff, 1e-6) << "position " << t << " saw token " << changed;
      } else {
        EXPECT_GT(diff, 1e-4) << "position " << t << " did not see token " << changed;
      }
    }
  }
}

TEST(TransformerTest, TheEncoderSeesEveryPosition) {
  const ModelSpec spec = Spec(Encoder());
  absl::StatusOr<core::ParameterSet> params = InitialParameters(spec, 3);
  ASSERT_TRUE(params.ok()) << params.status();
  std::vector<float> tokens = Tokens(2, 10, 9);
  absl::StatusOr<Outputs> before = ComputeOutputs(spec, *params, tokens, {10});
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->shape, (std::vector<int64_t>{2, 3}));
  tokens[9] = static_cast<float>((static_cast<int>(tokens[9]) + 7) % 259);  // the last token of example 0
  absl::StatusOr<Outputs> after = ComputeOutputs(spec, *params, tokens, {10});
  ASSERT_TRUE(after.ok());
  EXPECT_GT(std::abs(before->values[0] - after->values[0]), 1e-5);  // pooled at the first token
  EXPECT_EQ(before->values[3], after->values[3]);                    // example 1 untouched
}

TEST(TransformerTest, OutOfRangeTokensAndTooLongSequencesAreRefused) {
  const ModelSpec spec = Spec(Decoder());
  absl::StatusOr<core::ParameterSet> params = InitialParameters(spec, 3);
  ASSERT_TRUE(params.ok());
  std::vector<float> tokens = Tokens(1, 4, 1);
  tokens[2] = 259;
  absl::StatusOr<Outputs> bad = ComputeOutputs(spec, *params, tokens, {4});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("vocab_size = 259), got 259"));
  EXPECT_THAT(std::string(ComputeOutputs(spec, *params, Tokens(1, 33, 1), {33}).status().message()),
              HasSubstr("max_position_embeddings"));
}

TEST(TransformerTest, PyTorchTwinGivesTheSameLogitsForTheSameWeights) {
  TempDir dir;
  std::ostringstream script;
  script << "import json, sys\n"
            "try:\n"
            "    import torch\n"
            "except ImportError:\n"
            "    sys.exit(77)\n"
            "sys.path.insert(0, '" << COHORT_SOURCE_DIR << "/examples/python')\n"
            "import cohort_models\n"
            "config = json.load(open(sys.argv[1]))\n"
            "model = cohort_models.build_model(config)\n"
            "model.load_state_dict(torch.load(sys.argv[2], weights_only=True))\n"
            "model.eval()\n"
            "tokens = torch.tensor([float(v) for v in open(sys.argv[3]).read().split()]).view(2, -1)\n"
            "with torch.no_grad():\n"
            "    print(' '.join('%.9g' % v for v in model(tokens).flatten().tolist()))\n";
  const std::filesystem::path script_path = dir.path() / "logits.py";
  std::ofstream(script_path) << script.str();
  for (const json& config : {Decoder(0.1), Encoder()}) {
    SCOPED_TRACE(config.dump());
    const ModelSpec spec = Spec(config);
    absl::StatusOr<core::ParameterSet> params = InitialParameters(spec, 11);
    ASSERT_TRUE(params.ok()) << params.status();
    const std::string model = (dir.path() / "model.pt").string();
    ASSERT_TRUE(WriteStateDict(*params, model).ok());
    std::ofstream(dir.path() / "model.json") << config.dump();
    const std::vector<float> tokens = Tokens(2, 16, 17);
    {
      std::ofstream out(dir.path() / "tokens.txt");
      for (float v : tokens) out << v << " ";
    }
    absl::StatusOr<Outputs> ours = ComputeOutputs(spec, *params, tokens, {16});
    ASSERT_TRUE(ours.ok()) << ours.status();
    const auto [out, rc] = RunCommand(std::string(kPython) + " " + script_path.string() + " " +
                                      (dir.path() / "model.json").string() + " " + model + " " +
                                      (dir.path() / "tokens.txt").string() + " 2>&1");
    if (rc == kNoTorch) GTEST_SKIP() << kPython << " cannot import torch; install python3-torch";
    ASSERT_EQ(rc, 0) << out;
    std::istringstream in(out);
    std::vector<float> theirs;
    for (float v; in >> v;) theirs.push_back(v);
    ASSERT_EQ(theirs.size(), ours->values.size());
    double worst = 0;
    for (size_t i = 0; i < theirs.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(theirs[i] - ours->values[i])));
    }
    EXPECT_LT(worst, 1e-4);
  }
}

// The first windows of one fortunes category, or a synthetic text when the package is absent.
Dataset FortuneWindows(TempDir& dir, const std::string& file, size_t count) {
  TextDataOptions options;
  options.sequence_length = 32;
  options.test_fraction = 0;
  if (std::filesystem::exists(kFortunes)) {
    options.path = kFortunes;
    options.files = {file};
  } else {
    std::ofstream out(dir.path() / "text");
    for (int i = 0; i < 400; ++i) out << "the cat sat on the mat " << i % 7 << "\n%\n";
    options.path = dir.path().string();
  }
  absl::StatusOr<Dataset> data = ReadTextWindows(options, Split::kTrain);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? data->Head(count) : Dataset{};
}

core::TrainingConfig Sgd(int64_t batch, int64_t accumulate) {
  core::TrainingConfig c;
  c.optimizer = "sgd";
  c.learning_rate = 0.5;
  c.batch_size = batch;
  c.gradient_accumulation_steps = accumulate;
  c.max_steps_per_round = 1;
  return c;
}

absl::StatusOr<RoundResult> OneRound(const ModelSpec& spec, const Dataset& train, const core::TrainingConfig& config,
                                     uint64_t round = 1, uint64_t rounds = 1) {
  absl::StatusOr<core::ParameterSet> global = InitialParameters(spec, 21);
  if (!global.ok()) return global.status();
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(spec, train, Dataset{}, 5);
  if (!trainer.ok()) return trainer.status();
  return (*trainer)->TrainRound(*global, config, round, rounds);
}

double MaxAbsDifference(const core::ParameterSet& a, const core::ParameterSet& b) {
  double worst = 0;
  for (size_t i = 0; i < a.floats().size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(a.floats()[i] - b.floats()[i])));
  }
  return worst;
}

double MaxAbs(const core::ParameterSet& a) {
  double worst = 0;
  for (float v : a.floats()) worst = std::max(worst, static_cast<double>(std::abs(v)));
  return worst;
}

TEST(LanguageModelTrainingTest, AccumulatingTwoHalfBatchesTakesTheWholeBatchStep) {
  TempDir dir;
  const ModelSpec spec = Spec(Decoder());
  const Dataset train = FortuneWindows(dir, "computers", 64);
  absl::StatusOr<RoundResult> whole = OneRound(spec, train, Sgd(16, 1));
  absl::StatusOr<RoundResult> halves = OneRound(spec, train, Sgd(8, 2));
  absl::StatusOr<RoundResult> half = OneRound(spec, train, Sgd(8, 1));
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_TRUE(halves.ok()) << halves.status();
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(whole->metrics.steps, 1u);
  EXPECT_EQ(halves->metrics.steps, 1u);
  const double scale = MaxAbs(whole->delta);
  EXPECT_GT(scale, 1e-4);
  EXPECT_LT(MaxAbsDifference(whole->delta, halves->delta), 1e-4 * scale);
  // A step on the first half only is a different step.
  EXPECT_GT(MaxAbsDifference(whole->delta, half->delta), 1e-2 * scale);
}

TEST(LanguageModelTrainingTest, LabelSmoothingChangesTheStep) {
  TempDir dir;
  const ModelSpec spec = Spec(Decoder());
  const Dataset train = FortuneWindows(dir, "computers", 32);
  core::TrainingConfig smoothed = Sgd(16, 1);
  smoothed.label_smoothing = 0.1;
  absl::StatusOr<RoundResult> plain = OneRound(spec, train, Sgd(16, 1));
  absl::StatusOr<RoundResult> smooth = OneRound(spec, train, smoothed);
  ASSERT_TRUE(plain.ok() && smooth.ok());
  EXPECT_GT(MaxAbsDifference(plain->delta, smooth->delta), 1e-3 * MaxAbs(plain->delta));
}

TEST(LanguageModelTrainingTest, MaxStepsSpreadsTheJobsStepsOverRoundsPastLocalEpochs) {
  TempDir dir;
  const ModelSpec spec = Spec(Decoder());
  const Dataset train = FortuneWindows(dir, "computers", 24);  // 3 batches of 8 per epoch
  core::TrainingConfig c = Sgd(8, 1);
  c.max_steps_per_round = 0;
  c.max_steps = 11;
  c.local_epochs = 1;
  absl::StatusOr<RoundResult> first = OneRound(spec, train, c, 1, 2);
  absl::StatusOr<RoundResult> second = OneRound(spec, train, c, 2, 2);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->metrics.steps, 5u);
  EXPECT_EQ(second->metrics.steps, 6u);
}

TEST(LanguageModelTrainingTest, NextTokenTrainingOnFortunesLowersHeldOutLossAndPerplexity) {
  TempDir dir;
  const ModelSpec spec = Spec(Decoder(0.0));
  const Dataset all = FortuneWindows(dir, "computers", 600);
  ASSERT_GE(all.size(), 300u);
  std::vector<size_t> train_rows, eval_rows;
  for (size_t i = 0; i < all.size(); ++i) (i % 10 == 0 ? eval_rows : train_rows).push_back(i);
  const Dataset train = all.Subset(train_rows), eval = all.Subset(eval_rows);
  absl::StatusOr<core::ParameterSet> global = InitialParameters(spec, 2);
  ASSERT_TRUE(global.ok());
  absl::StatusOr<core::EvalMetrics> initial = Evaluate(spec, *global, eval);
  ASSERT_TRUE(initial.ok()) << initial.status();
  // Per token: small initial logits give about ln(259) = 5.56, i.e. a perplexity near 259.
  EXPECT_NEAR(initial->loss, std::log(259.0), 0.15);
  EXPECT_EQ(initial->samples, eval.size());
  core::TrainingConfig c;
  c.optimizer = "adamw";
  c.learning_rate = 3e-3;
  c.batch_size = 16;
  c.max_steps = 60;
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(spec, train, eval, 1);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  absl::StatusOr<RoundResult> round = (*trainer)->TrainRound(*global, c, 1, 1);
  ASSERT_TRUE(round.ok()) << round.status();
  EXPECT_EQ(round->metrics.steps, 60u);
  EXPECT_LT(round->metrics.eval_loss, initial->loss - 1.5);  // perplexity down more than e^1.5 = 4.5x
  EXPECT_GT(round->metrics.eval_accuracy, 0.12);             // bytes: spaces, "e", "t", ...
}

TEST(LanguageModelTrainingTest, RefusesDataAndPrivacyItCannotHandle) {
  TempDir dir;
  const ModelSpec spec = Spec(Decoder());
  const Dataset text = FortuneWindows(dir, "computers", 16);
  Dataset one_label_each = text;
  one_label_each.label_shape.clear();
  one_label_each.labels.resize(text.size());
  EXPECT_THAT(std::string(LocalTrainer::Create(spec, one_label_each, Dataset{}, 1).status().message()),
              HasSubstr("one label per example"));
  json small_vocab = Decoder();
  small_vocab["vocab_size"] = 100;
  EXPECT_THAT(std::string(LocalTrainer::Create(Spec(small_vocab), text, Dataset{}, 1).status().message()),
              HasSubstr("model_config.vocab_size is 100; set vocab_size >= 259"));
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(spec, text, Dataset{}, 1);
  ASSERT_TRUE(trainer.ok());
  absl::StatusOr<core::ParameterSet> global = InitialParameters(spec, 2);
  core::PrivacyConfig dp;
  dp.mechanism = "dp_sgd";
  dp.target_epsilon = 3;
  absl::StatusOr<RoundResult> refused = (*trainer)->TrainRound(*global, Sgd(8, 1), 1, 1, dp);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("does not support transformer"));
}

}  // namespace
}  // namespace cohort::training
