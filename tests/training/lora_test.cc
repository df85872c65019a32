// LoRA (model_config.lora, training/lora.h) through the training layer's narrow interfaces:
// the federated model is the adapters alone; with the adapters merged, the model's outputs
// equal the base + adapter model's; training moves the adapters and nothing else; the base
// file is checked by its SHA-256 and its layout; the PyTorch twin loads base + adapters and
// the merged model with the same outputs. This file includes no LibTorch header.
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "storage/atomic_write.h"
#include "storage/sha256.h"
#include "tests/temp_dir.h"
#include "training/inference.h"
#include "training/lora.h"
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
constexpr int64_t kT = 16;

json Decoder() {
  return {{"num_layers", 2}, {"hidden_size", 32}, {"num_attention_heads", 4}, {"vocab_size", 259},
          {"intermediate_size", 64}, {"max_position_embeddings", 32}, {"dropout", 0.0}};
}

json Encoder() {
  json config = Decoder();
  config["architecture"] = "encoder";
  config["num_classes"] = 3;
  return config;
}

json WithLora(json config, const std::string& base, std::vector<std::string> targets = {"query", "value"}) {
  config["lora"] = {{"rank", 4}, {"alpha", 8}, {"targets", targets}, {"base_model", base}};
  return config;
}

ModelSpec Spec(const json& config) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(config);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

// A base model: the transformer without "lora", initialized from `seed`, as its model.pt.
std::string WriteBase(const TempDir& dir, const json& config, uint64_t seed, const std::string& name = "base.pt") {
  absl::StatusOr<core::ParameterSet> base = InitialParameters(Spec(config), seed);
  EXPECT_TRUE(base.ok()) << base.status();
  const std::string path = (dir.path() / name).string();
  EXPECT_TRUE(WriteStateDict(*base, path).ok());
  return path;
}

ModelSpec LoraSpec(const json& config) {
  ModelSpec spec = Spec(config);
  absl::Status loaded = LoadLoraBase(&spec);
  EXPECT_TRUE(loaded.ok()) << loaded;
  return spec;
}

// Adapters with every value drawn, so that each adapter changes the outputs.
core::ParameterSet RandomAdapters(const ModelSpec& spec, uint32_t seed) {
  core::ParameterSet adapters(spec.ParameterManifest());
  for (float& v : adapters.floats()) {
    seed = seed * 1664525u + 1013904223u;
    v = (static_cast<float>(seed >> 8) / static_cast<float>(1 << 24) - 0.5f) * 0.4f;
  }
  return adapters;
}

std::vector<float> Tokens(int64_t n, uint32_t seed) {
  std::vector<float> tokens(static_cast<size_t>(n * kT));
  for (float& v : tokens) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<float>((seed >> 8) % 259);
  }
  return tokens;
}

Outputs OutputsOf(const ModelSpec& spec, const core::ParameterSet& parameters, const std::vector<float>& tokens) {
  absl::StatusOr<Outputs> out = ComputeOutputs(spec, parameters, tokens, {kT});
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : Outputs{};
}

double MaxAbsDifference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return worst;
}

TEST(LoraSpecTest, OnlyTheAdaptersAreTrainedAndTravel) {
  const ModelSpec spec = Spec(WithLora(Decoder(), "base.pt", {"query", "mlp_in"}));
  const core::Manifest m = spec.ParameterManifest();
  ASSERT_EQ(m.size(), 8u);  // 2 blocks x 2 targets x (A, B)
  EXPECT_EQ(m.tensors()[0].name, "blocks.0.attention.query.lora_A");
  EXPECT_EQ(m.tensors()[0].shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(m.tensors()[1].name, "blocks.0.attention.query.lora_B");
  EXPECT_EQ(m.tensors()[1].shape, (std::vector<int64_t>{32, 4}));
  EXPECT_EQ(m.tensors()[2].name, "blocks.0.mlp_in.lora_A");
  EXPECT_EQ(m.tensors()[3].shape, (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(m.tensors()[7].name, "blocks.1.mlp_in.lora_B");
  EXPECT_EQ(spec.BaseManifest(), Spec(Decoder()).ParameterManifest());
  EXPECT_LT(m.total_bytes() * 20, spec.BaseManifest().total_bytes());

  // With train_norms the LayerNorms travel too, in state_dict order among the adapters.
  json with_norms = WithLora(Decoder(), "base.pt", {"query"});
  with_norms["lora"]["train_norms"] = true;
  const core::Manifest n = Spec(with_norms).ParameterManifest();
  std::vector<std::string> names;
  for (const core::TensorSpec& t : n.tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ::testing::ElementsAre(
                         "blocks.0.attention_norm.weight", "blocks.0.attention_norm.bias",
                         "blocks.0.attention.query.lora_A", "blocks.0.attention.query.lora_B",
                         "blocks.0.mlp_norm.weight", "blocks.0.mlp_norm.bias", "blocks.1.attention_norm.weight",
                         "blocks.1.attention_norm.bias", "blocks.1.attention.query.lora_A",
                         "blocks.1.attention.query.lora_B", "blocks.1.mlp_norm.weight", "blocks.1.mlp_norm.bias",
                         "final_norm.weight", "final_norm.bias"));

  // The tied embedding's adapter comes first (the embedding is the first module), shaped
  // so that W + scaling * B A merges as a projection's does.
  const core::Manifest e = Spec(WithLora(Decoder(), "base.pt", {"token_embedding", "value"})).ParameterManifest();
  ASSERT_EQ(e.size(), 6u);
  EXPECT_EQ(e.tensors()[0].name, "token_embedding.lora_A");
  EXPECT_EQ(e.tensors()[0].shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(e.tensors()[1].name, "token_embedding.lora_B");
  EXPECT_EQ(e.tensors()[1].shape, (std::vector<int64_t>{Decoder()["vocab_size"].get<int64_t>(), 4}));
  EXPECT_EQ(e.tensors()[2].name, "blocks.0.attention.value.lora_A");

  const core::Manifest encoder = Spec(WithLora(Encoder(), "base.pt")).ParameterManifest();
  EXPECT_EQ(encoder.tensors()[encoder.size() - 2].name, "classifier.weight");  // a new head: trained in full
  EXPECT_EQ(encoder.tensors().back().name, "classifier.bias");
}

TEST(LoraSpecTest, BadSettingsAreRefusedNamingTheKey) {
  auto error = [](json config) {
    absl::StatusOr<ModelSpec> spec = ParseModelSpec(config);
    return spec.ok() ? std::string("accepted") : std::string(spec.status().message());
  };
  json config = WithLora(Decoder(), "base.pt");
  config["lora"].erase("rank");
  EXPECT_THAT(error(config), HasSubstr("model_config.lora.rank: missing"));
  config = WithLora(Decoder(), "base.pt", {"query", "attention"});
  EXPECT_THAT(error(config), HasSubstr("unknown projection \"attention\""));
  config = WithLora(Decoder(), "base.pt", {});
  EXPECT_THAT(error(config), HasSubstr("model_config.lora.targets"));
  config = WithLora(Decoder(), "base.pt");
  config["lora"]["rank"] = 33;
  EXPECT_THAT(error(config), HasSubstr("larger than the narrowest adapted dimension (32)"));
  config = WithLora(Decoder(), "");
  EXPECT_THAT(error(config), HasSubstr("model_config.lora.base_model: missing"));
  config = WithLora(Decoder(), "base.pt");
  config["lora"]["base_sha256"] = "ABC";
  EXPECT_THAT(error(config), HasSubstr("64 lowercase hex"));
  config = WithLora(Decoder(), "base.pt");
  config["lora"]["dropout"] = 0.1;
  EXPECT_THAT(error(config), HasSubstr("model_config.lora.dropout"));
  config = WithLora(Decoder(), "base.pt");
  EXPECT_EQ(error(config), "accepted");
  EXPECT_DOUBLE_EQ(Spec(config).transformer->lora->scaling(), 2.0);
}

TEST(LoraTest, FreshAdaptersLeaveTheBaseModelExactly) {
  TempDir dir;
  const std::string base_path = WriteBase(dir, Decoder(), 3);
  absl::StatusOr<core::ParameterSet> base = ReadStateDict(base_path);
  ASSERT_TRUE(base.ok());
  const std::vector<float> tokens = Tokens(2, 5);
  for (bool train_norms : {false, true}) {
    SCOPED_TRACE(train_norms ? "train_norms" : "adapters only");
    json config =
        WithLora(Decoder(), base_path, {"token_embedding", "query", "key", "value", "output", "mlp_in", "mlp_out"});
    config["lora"]["train_norms"] = train_norms;
    const ModelSpec spec = LoraSpec(config);
    // The job's first model: fresh adapters and (with train_norms) the base's norms.
    absl::StatusOr<core::ParameterSet> initial = InitialParameters(spec, 9);
    ASSERT_TRUE(initial.ok()) << initial.status();
    EXPECT_EQ(OutputsOf(spec, *initial, tokens).values, OutputsOf(Spec(Decoder()), *base, tokens).values);
  }
}

TEST(LoraTest, TheMergedModelGivesTheSameOutputsAsBasePlusAdapters) {
  for (const json& plain : {Decoder(), Encoder()}) {
    SCOPED_TRACE(plain.dump());
    TempDir dir;
    const std::string base_path = WriteBase(dir, plain, 3);
    const ModelSpec spec = LoraSpec(WithLora(plain, base_path, {"token_embedding", "query", "value", "mlp_out"}));
    const core::ParameterSet adapters = RandomAdapters(spec, 77);
    const std::vector<float> tokens = Tokens(3, 8);
    const Outputs adapted = OutputsOf(spec, adapters, tokens);

    absl::StatusOr<core::ParameterSet> merged = MergeLora(spec, adapters);
    ASSERT_TRUE(merged.ok()) << merged.status();
    const Outputs from_merged = OutputsOf(Spec(plain), *merged, tokens);
    EXPECT_LT(MaxAbsDifference(adapted.values, from_merged.values), 1e-4);
    // The adapters matter: the base model alone answers differently.
    EXPECT_GT(MaxAbsDifference(adapted.values, OutputsOf(Spec(plain), *spec.lora_base, tokens).values), 1e-2);
  }
}

// Windows of one fortunes category, or a synthetic text when the package is absent.
Dataset TextWindows(TempDir& dir, size_t count) {
  TextDataOptions options;
  options.sequence_length = kT;
  options.test_fraction = 0;
  if (std::filesystem::exists(kFortunes)) {
    options.path = kFortunes;
    options.files = {"computers"};
  } else {
    std::ofstream out(dir.path() / "text");
    for (int i = 0; i < 400; ++i) out << "the cat sat on the mat " << i % 7 << "\n%\n";
    options.path = dir.path().string();
  }
  absl::StatusOr<Dataset> data = ReadTextWindows(options, Split::kTrain);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok() ? data->Head(count) : Dataset{};
}

TEST(LoraTest, TrainingMovesTheAdaptersAndLowersTheLoss) {
  TempDir dir;
  const std::string base_path = WriteBase(dir, Decoder(), 3);
  const ModelSpec spec = LoraSpec(WithLora(Decoder(), base_path));
  const Dataset train = TextWindows(dir, 128);
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(spec, train, Dataset{}, 5);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  core::TrainingConfig config;
  config.optimizer = "adam";
  config.learning_rate = 0.01;
  config.batch_size = 32;
  config.local_epochs = 2;
  absl::StatusOr<core::ParameterSet> global = InitialParameters(spec, 21);
  ASSERT_TRUE(global.ok());
  absl::StatusOr<core::EvalMetrics> before = Evaluate(spec, *global, train);
  ASSERT_TRUE(before.ok()) << before.status();
  for (uint64_t round = 1; round <= 3; ++round) {
    absl::StatusOr<RoundResult> result = (*trainer)->TrainRound(*global, config, round, 3);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->delta.manifest(), spec.ParameterManifest());  // the update is the adapters alone
    for (size_t i = 0; i < global->floats().size(); ++i) global->floats()[i] += result->delta.floats()[i];
  }
  absl::StatusOr<core::EvalMetrics> after = Evaluate(spec, *global, train);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->loss, before->loss - 0.05) << before->loss << " -> " << after->loss;
  // Both matrices of every adapter moved (B from zero; A once B was no longer zero).
  for (size_t i = 0; i < global->manifest().size(); ++i) {
    absl::StatusOr<core::ParameterSet> initial = InitialParameters(spec, 21);
    const auto now = global->tensor_bytes(i), then = initial->tensor_bytes(i);
    EXPECT_NE(std::memcmp(now.data(), then.data(), now.size()), 0) << global->manifest().tensors()[i].name;
  }
  // The base file is what it was: training never writes it.
  absl::StatusOr<core::ParameterSet> base = ReadStateDict(base_path);
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(std::memcmp(base->bytes().data(), spec.lora_base->bytes().data(), base->bytes().size()), 0);
}

TEST(LoraTest, TheBaseFileIsCheckedByItsDigestAndLayout) {
  TempDir dir;
  const std::string base_path = WriteBase(dir, Decoder(), 3);
  absl::StatusOr<std::string> contents = storage::ReadFile(base_path);
  ASSERT_TRUE(contents.ok());
  const std::string digest = storage::Sha256Hex(std::string_view(*contents));

  // Unset: filled in from the file, in the spec and in its config (which the server sends on).
  ModelSpec spec = Spec(WithLora(Decoder(), base_path));
  ASSERT_TRUE(LoadLoraBase(&spec).ok());
  EXPECT_EQ(spec.transformer->lora->base_sha256, digest);
  EXPECT_EQ(spec.config["lora"]["base_sha256"], digest);

  // Another base (same layout, other weights) at a site: refused, naming both digests.
  const std::string other = WriteBase(dir, Decoder(), 4, "other.pt");
  json config = WithLora(Decoder(), base_path);
  config["lora"]["base_sha256"] = digest;
  ModelSpec at_site = Spec(config);
  absl::Status wrong = LoadLoraBase(&at_site, other);
  EXPECT_EQ(wrong.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.message()), HasSubstr(digest));
  EXPECT_THAT(std::string(wrong.message()), HasSubstr("sha256sum"));
  EXPECT_FALSE(at_site.lora_base);
  // The right copy elsewhere on the site's disk: accepted.
  const std::string copy = (dir.path() / "copy.pt").string();
  std::filesystem::copy_file(base_path, copy);
  EXPECT_TRUE(LoadLoraBase(&at_site, copy).ok());
  EXPECT_EQ(at_site.transformer->lora->base_model, copy);

  // A file of another transformer, a missing file, a file that is not a state_dict.
  json wider = Decoder();
  wider["hidden_size"] = 48;
  const std::string wide = WriteBase(dir, wider, 3, "wide.pt");
  ModelSpec fresh = Spec(WithLora(Decoder(), wide));
  EXPECT_THAT(std::string(LoadLoraBase(&fresh).message()), HasSubstr("token_embedding.weight is [259, 48]"));
  fresh = Spec(WithLora(Decoder(), (dir.path() / "missing.pt").string()));
  EXPECT_THAT(std::string(LoadLoraBase(&fresh).message()), HasSubstr("missing.pt"));
  std::ofstream(dir.path() / "junk.pt") << "not a state dict";
  fresh = Spec(WithLora(Decoder(), (dir.path() / "junk.pt").string()));
  EXPECT_FALSE(LoadLoraBase(&fresh).ok());
  // A path a server names is read only if it is a regular file of a plausible size: not a
  // device that never ends, not a directory, not a file far larger than this model.
  fresh = Spec(WithLora(Decoder(), "/dev/zero"));
  EXPECT_THAT(std::string(LoadLoraBase(&fresh).message()), HasSubstr("not a regular file"));
  fresh = Spec(WithLora(Decoder(), dir.path().string()));
  EXPECT_THAT(std::string(LoadLoraBase(&fresh).message()), HasSubstr("not a regular file"));
  std::filesystem::resize_file(dir.path() / "junk.pt", 64 << 20);
  fresh = Spec(WithLora(Decoder(), (dir.path() / "junk.pt").string()));
  EXPECT_THAT(std::string(LoadLoraBase(&fresh).message()), HasSubstr("more than a state_dict"));

  // Training without the base loaded is refused, not run on random weights.
  const ModelSpec unloaded = Spec(WithLora(Decoder(), base_path));
  TempDir text;
  absl::StatusOr<std::unique_ptr<LocalTrainer>> trainer = LocalTrainer::Create(unloaded, TextWindows(text, 8), Dataset{}, 1);
  ASSERT_FALSE(trainer.ok());
  EXPECT_THAT(std::string(trainer.status().message()), HasSubstr("base model is not loaded"));
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

TEST(LoraTest, PyTorchLoadsBasePlusAdaptersAndTheMergedModelWithOurOutputs) {
  TempDir dir;
  const std::string base_path = WriteBase(dir, Decoder(), 3);
  json lora_config = WithLora(Decoder(), base_path, {"token_embedding", "query", "value", "mlp_in"});
  lora_config["lora"]["train_norms"] = true;
  const ModelSpec spec = LoraSpec(lora_config);
  const core::ParameterSet adapters = RandomAdapters(spec, 5);
  absl::StatusOr<core::ParameterSet> merged = MergeLora(spec, adapters);
  ASSERT_TRUE(merged.ok()) << merged.status();
  ASSERT_TRUE(WriteStateDict(adapters, (dir.path() / "adapters.pt").string()).ok());
  ASSERT_TRUE(WriteStateDict(*merged, (dir.path() / "merged.pt").string()).ok());
  std::ofstream(dir.path() / "lora.json") << lora_config.dump();
  std::ofstream(dir.path() / "plain.json") << Decoder().dump();
  const std::vector<float> tokens = Tokens(2, 3);
  {
    std::ofstream out(dir.path() / "tokens.txt");
    for (float v : tokens) out << v << " ";
  }
  const std::string d = dir.path().string() + "/";
  std::ofstream(d + "check.py")
      << "import json, sys\n"
         "try:\n"
         "    import torch\n"
         "except ImportError:\n"
         "    sys.exit(77)\n"
         "sys.path.insert(0, '" << COHORT_SOURCE_DIR << "/examples/python')\n"
         "import cohort_models\n"
         "d = sys.argv[1]\n"
         "tokens = torch.tensor([float(v) for v in open(d + 'tokens.txt').read().split()]).view(2, -1)\n"
         "adapted = cohort_models.build_model(json.load(open(d + 'lora.json')))\n"
         "missing, unexpected = adapted.load_state_dict(torch.load(d + 'base.pt', weights_only=True), strict=False)\n"
         "assert not unexpected and all(k.endswith(('lora_A', 'lora_B')) for k in missing), (missing, unexpected)\n"
         "missing, unexpected = adapted.load_state_dict(torch.load(d + 'adapters.pt', weights_only=True), strict=False)\n"
         "assert not unexpected, unexpected\n"
         "assert sorted(k for k, p in adapted.named_parameters() if p.requires_grad) == "
         "sorted(torch.load(d + 'adapters.pt', weights_only=True))\n"
         "plain = cohort_models.build_model(json.load(open(d + 'plain.json')))\n"
         "plain.load_state_dict(torch.load(d + 'merged.pt', weights_only=True))\n"
         "adapted.eval(); plain.eval()\n"
         "with torch.no_grad():\n"
         "    for model in (adapted, plain):\n"
         "        print(' '.join('%.9g' % v for v in model(tokens).flatten().tolist()))\n";
  const auto [out, rc] = RunCommand(std::string(kPython) + " " + d + "check.py " + d + " 2>&1");
  if (rc == kNoTorch) GTEST_SKIP() << kPython << " cannot import torch; install python3-torch";
  ASSERT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  const Outputs ours = OutputsOf(spec, adapters, tokens);
  int models = 0;
  for (std::string line; std::getline(lines, line); ++models) {
    std::istringstream in(line);
    std::vector<float> theirs;
    for (float v; in >> v;) theirs.push_back(v);
    EXPECT_LT(MaxAbsDifference(theirs, ours.values), 1e-4);
  }
  EXPECT_EQ(models, 2) << out;
}

}  // namespace
}  // namespace cohort::training
