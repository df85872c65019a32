// DP-SGD's LibTorch side (per_example_grads.h, dp_sgd_step.h), checked against the plain
// definition: one backward pass per example. Includes LibTorch (the internal headers do).
#include "training/per_example_grads.h"

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "training/data_readers.h"
#include "training/dp_sgd_step.h"
#include "training/model_spec.h"
#include "training/torch_model.h"

namespace cohort::training {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kFashionMnistDir = COHORT_FASHION_MNIST_DIR;
const std::string kModelsDir = COHORT_MODELS_DIR;

ModelSpec SpecOf(const json& config) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(config);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec{};
}

std::vector<std::string> LabelsOf(const ModelSpec& spec) {
  std::vector<std::string> labels;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    labels.push_back("model_config.layers[" + std::to_string(i) + "] (" + spec.layers[i].type + ")");
  }
  return labels;
}

// Example n's gradient, by a backward pass over that example alone.
std::vector<torch::Tensor> SingleExampleGradient(torch::nn::Sequential& net, const torch::Tensor& x,
                                                 const torch::Tensor& y, int64_t n) {
  net->zero_grad();
  torch::nn::functional::cross_entropy(net->forward(x.slice(0, n, n + 1)), y.slice(0, n, n + 1)).backward();
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : net->parameters()) grads.push_back(p.grad().clone());
  return grads;
}

// ||a - b|| <= tolerance * max(||b||, floor): relative, with a floor for gradients near 0.
void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, const std::string& what, double tolerance = 1e-5) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm().item<double>();
  const double scale = std::max(b.to(torch::kFloat64).norm().item<double>(), 1e-6);
  EXPECT_LE(diff, tolerance * scale) << what << ": |a - b| = " << diff << ", |b| = " << scale;
}

// The engine's per-example norms, one-hot sums (example n's gradient itself) and a random
// weighted sum, each against single-example backward passes.
void ExpectPerExampleGradientsMatch(torch::nn::Sequential net, const torch::Tensor& x, const torch::Tensor& y) {
  net->eval();  // no dropout in these models; eval() keeps that explicit
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net, {});
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int64_t b = x.size(0);
  const torch::Tensor losses = engine->Backward(x, y);
  ASSERT_EQ(losses.size(0), b);

  std::vector<std::vector<torch::Tensor>> expected;
  for (int64_t n = 0; n < b; ++n) expected.push_back(SingleExampleGradient(net, x, y, n));
  const auto names = net->named_parameters();

  const std::vector<torch::Tensor> norms = engine->SquaredNormsPerParameter();
  ASSERT_EQ(norms.size(), names.size());
  for (size_t p = 0; p < names.size(); ++p) {
    torch::Tensor want = torch::empty({b});
    for (int64_t n = 0; n < b; ++n) want[n] = expected[n][p].pow(2).sum();
    ExpectClose(norms[p], want, "squared norms of " + names[p].key());
  }
  torch::Tensor total = torch::zeros({b});
  for (const torch::Tensor& t : norms) total += t;
  ExpectClose(engine->SquaredNorms(), total, "total squared norms");

  for (int64_t n = 0; n < b; ++n) {
    const std::vector<torch::Tensor> got = engine->WeightedSum(torch::one_hot(torch::tensor(n), b).to(torch::kFloat));
    for (size_t p = 0; p < names.size(); ++p) {
      ExpectClose(got[p], expected[n][p], "example " + std::to_string(n) + "'s gradient of " + names[p].key());
    }
  }
  const torch::Tensor weights = torch::rand({b});
  const std::vector<torch::Tensor> got = engine->WeightedSum(weights);
  for (size_t p = 0; p < names.size(); ++p) {
    torch::Tensor want = torch::zeros_like(expected[0][p]);
    for (int64_t n = 0; n < b; ++n) want += weights[n].item<float>() * expected[n][p];
    ExpectClose(got[p], want, "weighted sum of " + names[p].key());
  }
}

void ExpectPerExampleGradientsMatch(const ModelSpec& spec, const torch::Tensor& x, const torch::Tensor& y) {
  torch::manual_seed(3);
  CohortNet net(spec);
  ExpectPerExampleGradientsMatch(net->layers(), x, y);
}

class PerExampleGradientsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    torch::manual_seed(11);
  }
};

TEST_F(PerExampleGradientsTest, LinearLayersWithAndWithoutBiasMatchSingleExampleBackward) {
  const ModelSpec spec = SpecOf(json::parse(R"({"input_shape": [12], "num_classes": 3, "layers": [
      {"type": "linear", "out_features": 7}, {"type": "tanh"},
      {"type": "linear", "out_features": 3, "bias": false}]})"));
  ExpectPerExampleGradientsMatch(spec, torch::randn({9, 12}), torch::randint(0, 3, {9}));
}

TEST_F(PerExampleGradientsTest, Conv2dWithStridePaddingAndNoBiasMatchesSingleExampleBackward) {
  const ModelSpec spec = SpecOf(json::parse(R"({"input_shape": [2, 9, 9], "num_classes": 3, "layers": [
      {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1}, {"type": "relu"},
      {"type": "conv2d", "out_channels": 4, "kernel_size": 2, "bias": false}, {"type": "sigmoid"},
      {"type": "flatten"}, {"type": "linear", "out_features": 3}]})"));
  ExpectPerExampleGradientsMatch(spec, torch::randn({7, 2, 9, 9}), torch::randint(0, 3, {7}));
}

TEST_F(PerExampleGradientsTest, EmbeddingWithRepeatedIndicesMatchesSingleExampleBackward) {
  // Indices repeat within an example, so rows of its gradient collect several positions.
  const ModelSpec spec = SpecOf(json::parse(R"({"input_shape": [6], "num_classes": 3, "layers": [
      {"type": "embedding", "num_embeddings": 5, "embedding_dim": 4}, {"type": "flatten"},
      {"type": "linear", "out_features": 3}]})"));
  const torch::Tensor x = torch::randint(0, 5, {8, 6}).to(torch::kFloat);
  ASSERT_LT(std::get<0>(torch::_unique(x[0])).size(0), 6) << "the test needs a repeated index";
  ExpectPerExampleGradientsMatch(spec, x, torch::randint(0, 3, {8}));
}

TEST_F(PerExampleGradientsTest, LayerNormOverPositionsMatchesSingleExampleBackward) {
  // A [3, 8] input per example: layer_norm's weight is shared by the three positions.
  const ModelSpec spec = SpecOf(json::parse(R"({"input_shape": [3, 8], "num_classes": 4, "layers": [
      {"type": "layer_norm"}, {"type": "gelu"}, {"type": "flatten"}, {"type": "linear", "out_features": 4}]})"));
  ExpectPerExampleGradientsMatch(spec, torch::randn({6, 3, 8}), torch::randint(0, 4, {6}));
}

TEST_F(PerExampleGradientsTest, EveryLayerTypeInOneModelMatchesSingleExampleBackward) {
  const ModelSpec spec = SpecOf(json::parse(R"({"input_shape": [10], "num_classes": 5, "layers": [
      {"type": "embedding", "num_embeddings": 20, "embedding_dim": 6}, {"type": "layer_norm"},
      {"type": "flatten"}, {"type": "linear", "out_features": 8}, {"type": "relu"},
      {"type": "linear", "out_features": 5}]})"));
  ExpectPerExampleGradientsMatch(spec, torch::randint(0, 20, {12, 10}).to(torch::kFloat),
                                 torch::randint(0, 5, {12}));
}

TEST_F(PerExampleGradientsTest, TheNiidCnnOnFashionMnistMatchesSingleExampleBackward) {
  std::ifstream in(kModelsDir + "/niid_cnn.json");
  const ModelSpec spec = SpecOf(json::parse(in));
  absl::StatusOr<Dataset> test = ReadFashionMnist(kFashionMnistDir, Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  Dataset d = test->Head(16);
  const torch::Tensor x = torch::from_blob(d.features.data(), {16, 1, 28, 28}).clone();
  const torch::Tensor y = torch::from_blob(d.labels.data(), {16}, torch::kInt64).clone();
  ExpectPerExampleGradientsMatch(spec, x, y);
}

TEST_F(PerExampleGradientsTest, LongEmbeddingInputsSplitTheBatchIntoChunksAndStillMatch) {
  // Per example, the scattered gradient (1000 x 600) or the position pairs (1100^2) exceed
  // half of kChunkFloats, so each chunk holds one example and a batch of three takes three.
  static_assert(PerExampleGradients::kChunkFloats / (1000 * 600) == 1);
  static_assert(PerExampleGradients::kChunkFloats / (1100 * 1100) == 0);
  const ModelSpec scattered = SpecOf(json::parse(R"({"input_shape": [800], "num_classes": 2, "layers": [
      {"type": "embedding", "num_embeddings": 1000, "embedding_dim": 600}, {"type": "flatten"},
      {"type": "linear", "out_features": 2}]})"));
  ExpectPerExampleGradientsMatch(scattered, torch::randint(0, 1000, {3, 800}).to(torch::kFloat),
                                 torch::randint(0, 2, {3}));
  const ModelSpec pairs = SpecOf(json::parse(R"({"input_shape": [1100], "num_classes": 2, "layers": [
      {"type": "embedding", "num_embeddings": 1300, "embedding_dim": 1000}, {"type": "flatten"},
      {"type": "linear", "out_features": 2}]})"));
  ExpectPerExampleGradientsMatch(pairs, torch::randint(0, 1300, {3, 1100}).to(torch::kFloat),
                                 torch::randint(0, 2, {3}));
}

TEST_F(PerExampleGradientsTest, ALinearLayerOverPositionsMatchesSingleExampleBackward) {
  // Not reachable from a model_config (linear there needs a flat input), but the engine
  // handles it: the weight is shared by the positions of an example.
  torch::nn::Sequential net(torch::nn::Linear(5, 4), torch::nn::Tanh(), torch::nn::Flatten(),
                            torch::nn::Linear(12, 3));
  ExpectPerExampleGradientsMatch(net, torch::randn({6, 3, 5}), torch::randint(0, 3, {6}));
}

TEST_F(PerExampleGradientsTest, ALayerWithoutPerExampleGradientsIsRefusedWithItsName) {
  torch::nn::Sequential batch_norm(torch::nn::Linear(4, 4), torch::nn::BatchNorm1d(4), torch::nn::Linear(4, 2));
  absl::StatusOr<PerExampleGradients> refused = PerExampleGradients::Create(
      batch_norm, {"model_config.layers[0] (linear)", "model_config.layers[1] (batch_norm)",
                   "model_config.layers[2] (linear)"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("model_config.layers[1] (batch_norm): DP-SGD cannot compute per-example gradients"));

  // A conv2d with groups mixes channels differently from what the unfold path computes.
  torch::nn::Sequential grouped(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 2, 3).groups(2)));
  refused = PerExampleGradients::Create(grouped, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("layer 0 (torch::nn::Conv2d"));

  // Layers without parameters are fine whatever they are.
  torch::nn::Sequential plain(torch::nn::Linear(4, 4), torch::nn::BatchNorm1d(torch::nn::BatchNormOptions(4).affine(false)),
                              torch::nn::Linear(4, 2));
  EXPECT_TRUE(PerExampleGradients::Create(plain, {}).ok());
}

TEST_F(PerExampleGradientsTest, ClippingBoundsEveryExamplesContribution) {
  std::ifstream in(kModelsDir + "/niid_cnn.json");
  const ModelSpec spec = SpecOf(json::parse(in));
  CohortNet net(spec);
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), LabelsOf(spec));
  ASSERT_TRUE(engine.ok()) << engine.status();
  const int64_t b = 24;
  engine->Backward(torch::rand({b, 1, 28, 28}), torch::randint(0, 10, {b}));
  const torch::Tensor norms = engine->SquaredNorms().sqrt();
  // A bound below some norms and above others, so both cases occur.
  const double clip = norms.median().item<double>();
  const torch::Tensor factors = ClipFactors(norms, clip);
  int64_t clipped = 0;
  for (int64_t n = 0; n < b; ++n) {
    const torch::Tensor one = torch::one_hot(torch::tensor(n), b).to(torch::kFloat) * factors;
    double squared = 0;
    for (const torch::Tensor& t : engine->WeightedSum(one)) squared += t.pow(2).sum().item<double>();
    const double contribution = std::sqrt(squared), raw = norms[n].item<double>();
    EXPECT_LE(contribution, clip * (1 + 1e-5)) << "example " << n;
    if (raw > clip) {
      ++clipped;
      EXPECT_NEAR(contribution, clip, 1e-4 * clip) << "example " << n << " is scaled to the bound";
    } else {
      EXPECT_NEAR(contribution, raw, 1e-4 * raw) << "example " << n << " is left as it was";
    }
  }
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, b);
}

TEST_F(PerExampleGradientsTest, AnEmptyBatchGivesNoiseOfStddevSigmaTimesClipOverTheExpectedBatch) {
  // 44,426 noise values of the niid_cnn: the sample stddev has a relative standard error of
  // 1/sqrt(2 * 44426) = 0.34%, so a 3% tolerance is nine standard errors.
  std::ifstream in(kModelsDir + "/niid_cnn.json");
  const ModelSpec spec = SpecOf(json::parse(in));
  CohortNet net(spec);
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), LabelsOf(spec));
  ASSERT_TRUE(engine.ok()) << engine.status();
  absl::StatusOr<SecureGenerator> random = SecureGenerator::Create();
  ASSERT_TRUE(random.ok()) << random.status();
  DpSgdSpend spend;
  spend.noise_multiplier = 1.3;
  spend.clip_norm = 0.5;
  spend.expected_batch_size = 64;
  DpStepStats stats;
  const std::vector<torch::Tensor> gradient =
      PrivatizedGradient(*engine, net->parameters(), torch::empty({0, 1, 28, 28}), torch::empty({0}, torch::kInt64),
                         spend, random->generator(), &stats);
  EXPECT_EQ(stats.batch_size, 0);
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& g : gradient) flat.push_back(g.reshape({-1}));
  const torch::Tensor all = torch::cat(flat).to(torch::kFloat64);
  ASSERT_EQ(all.size(0), spec.num_parameters());
  const double expected = 1.3 * 0.5 / 64;
  EXPECT_NEAR(all.std().item<double>() / expected, 1.0, 0.03);
  EXPECT_NEAR(all.mean().item<double>() / expected, 0.0, 0.03);  // 9 standard errors of the mean
}

TEST_F(PerExampleGradientsTest, NoiseIsAddedToTheClippedSumAndDividedByTheExpectedBatch) {
  // With negligible noise the privatized gradient is the clipped sum over q N.
  const ModelSpec spec = SpecOf(json::parse(R"({"input_shape": [5], "num_classes": 2, "layers": [
      {"type": "linear", "out_features": 2}]})"));
  CohortNet net(spec);
  absl::StatusOr<PerExampleGradients> engine = PerExampleGradients::Create(net->layers(), LabelsOf(spec));
  ASSERT_TRUE(engine.ok()) << engine.status();
  const torch::Tensor x = torch::randn({10, 5}) * 10, y = torch::randint(0, 2, {10});
  engine->Backward(x, y);
  const torch::Tensor norms = engine->SquaredNorms().sqrt();
  const std::vector<torch::Tensor> clipped_sum = engine->WeightedSum(ClipFactors(norms, 0.1));
  absl::StatusOr<SecureGenerator> random = SecureGenerator::Create();
  ASSERT_TRUE(random.ok());
  DpSgdSpend spend;
  spend.noise_multiplier = 1e-9;
  spend.clip_norm = 0.1;
  spend.expected_batch_size = 8;
  DpStepStats stats;
  const std::vector<torch::Tensor> gradient =
      PrivatizedGradient(*engine, net->parameters(), x, y, spend, random->generator(), &stats);
  ASSERT_EQ(gradient.size(), clipped_sum.size());
  for (size_t i = 0; i < gradient.size(); ++i) ExpectClose(gradient[i], clipped_sum[i] / 8, "parameter", 1e-5);
  EXPECT_EQ(stats.batch_size, 10);
  EXPECT_EQ(stats.clipped, norms.gt(0.1).sum().item<int64_t>());
}

TEST(PoissonSampleTest, BatchSizesHaveMeanQnAndBinomialVariance) {
  // 2,000 draws of n = 10,000 at q = 0.01: mean 100 (standard error 0.22), variance 99
  // (standard error 3.1); the tolerances are nine and eight standard errors.
  absl::StatusOr<SecureGenerator> random = SecureGenerator::Create();
  ASSERT_TRUE(random.ok()) << random.status();
  double sum = 0, sum_squares = 0;
  const int draws = 2000;
  for (int i = 0; i < draws; ++i) {
    const torch::Tensor idx = PoissonSample(10000, 0.01, random->generator());
    const double size = static_cast<double>(idx.size(0));
    sum += size;
    sum_squares += size * size;
    if (i < 20 && idx.size(0) > 1) {
      EXPECT_GE(idx.min().item<int64_t>(), 0);
      EXPECT_LT(idx.max().item<int64_t>(), 10000);
      EXPECT_TRUE(idx.slice(0, 1).gt(idx.slice(0, 0, -1)).all().item<bool>()) << "ascending, no repeats";
    }
  }
  const double mean = sum / draws, variance = sum_squares / draws - mean * mean;
  EXPECT_NEAR(mean, 100.0, 2.0);
  EXPECT_NEAR(variance, 99.0, 25.0);
  EXPECT_EQ(PoissonSample(7, 1.0, random->generator()).size(0), 7) << "q = 1 takes every example";
}

TEST(SecureGeneratorTest, TwoGeneratorsAndTwoReseedsDrawDifferentStreams) {
  absl::StatusOr<SecureGenerator> a = SecureGenerator::Create(), b = SecureGenerator::Create();
  ASSERT_TRUE(a.ok() && b.ok());
  torch::manual_seed(5);  // the global seed plays no part
  const torch::Tensor from_a = torch::randn({8}, a->generator());
  torch::manual_seed(5);
  const torch::Tensor from_b = torch::randn({8}, b->generator());
  EXPECT_FALSE(torch::equal(from_a, from_b));
  ASSERT_TRUE(a->Reseed().ok());
  EXPECT_FALSE(torch::equal(torch::randn({8}, a->generator()), from_a));
}

}  // namespace
}  // namespace cohort::training
