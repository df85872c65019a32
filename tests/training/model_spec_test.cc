#include "training/model_spec.h"

#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cohort::training {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kModelsDir = COHORT_MODELS_DIR;

json LoadModelConfig(const std::string& name) {
  std::ifstream in(kModelsDir + "/" + name);
  EXPECT_TRUE(in.good()) << "cannot open " << kModelsDir << "/" << name;
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// A small valid model to break one piece at a time.
json SmallCnn() {
  return json::parse(R"({
    "name": "small", "input_shape": [1, 28, 28], "num_classes": 10,
    "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3}, {"type": "relu"},
               {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
               {"type": "linear", "out_features": 10}]
  })");
}

std::string ErrorOf(const json& config) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(config);
  if (spec.ok()) {
    ADD_FAILURE() << "parsed, but should have been refused: " << config.dump();
    return "";
  }
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(spec.status().message());
}

TEST(ModelSpecTest, TheNiidBenchCnnHasExactly44426Parameters) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(LoadModelConfig("niid_cnn.json"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "niid_cnn");
  EXPECT_EQ(spec->num_classes, 10);
  EXPECT_EQ(spec->input_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(spec->num_parameters(), 44426);
}

TEST(ModelSpecTest, TheNiidBenchCnnManifestHasTheStateDictKeysAndShapes) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(LoadModelConfig("niid_cnn.json"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  const core::Manifest expected({{"layers.1.weight", core::DType::kFloat32, {6, 1, 5, 5}},
                                 {"layers.1.bias", core::DType::kFloat32, {6}},
                                 {"layers.4.weight", core::DType::kFloat32, {16, 6, 5, 5}},
                                 {"layers.4.bias", core::DType::kFloat32, {16}},
                                 {"layers.8.weight", core::DType::kFloat32, {120, 256}},
                                 {"layers.8.bias", core::DType::kFloat32, {120}},
                                 {"layers.10.weight", core::DType::kFloat32, {84, 120}},
                                 {"layers.10.bias", core::DType::kFloat32, {84}},
                                 {"layers.12.weight", core::DType::kFloat32, {10, 84}},
                                 {"layers.12.bias", core::DType::kFloat32, {10}}});
  const core::Manifest manifest = spec->ParameterManifest();
  EXPECT_TRUE(expected.CheckSameAs(manifest).ok()) << expected.CheckSameAs(manifest);
  EXPECT_EQ(manifest.total_bytes(), 44426u * 4);
}

TEST(ModelSpecTest, TheNiidBenchCnnInfersEveryLayersOutputShape) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(LoadModelConfig("niid_cnn.json"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->layers.size(), 13u);
  const std::vector<std::vector<int64_t>> shapes = {
      {1, 28, 28}, {6, 24, 24}, {6, 24, 24}, {6, 12, 12}, {16, 8, 8}, {16, 8, 8}, {16, 4, 4},
      {256},       {120},       {120},       {84},        {84},       {10}};
  for (size_t i = 0; i < shapes.size(); ++i) EXPECT_EQ(spec->layers[i].output_shape, shapes[i]) << "layer " << i;
  EXPECT_DOUBLE_EQ(spec->layers[0].mean, 0.286);
  EXPECT_DOUBLE_EQ(spec->layers[0].std, 0.353);
  EXPECT_EQ(spec->layers[8].in_features, 256);
  EXPECT_EQ(spec->layers[3].stride, 2) << "pooling stride defaults to the kernel size";
}

TEST(ModelSpecTest, TheMlpConfigHasTheExpectedManifest) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(LoadModelConfig("mlp.json"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  const core::Manifest expected({{"layers.2.weight", core::DType::kFloat32, {200, 784}},
                                 {"layers.2.bias", core::DType::kFloat32, {200}},
                                 {"layers.4.weight", core::DType::kFloat32, {200, 200}},
                                 {"layers.4.bias", core::DType::kFloat32, {200}},
                                 {"layers.6.weight", core::DType::kFloat32, {10, 200}},
                                 {"layers.6.bias", core::DType::kFloat32, {10}}});
  EXPECT_TRUE(expected.CheckSameAs(spec->ParameterManifest()).ok()) << expected.CheckSameAs(spec->ParameterManifest());
  EXPECT_EQ(spec->num_parameters(), 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10);
}

TEST(ModelSpecTest, StridePaddingBiasAndLayerNormShapeTheManifest) {
  const json config = json::parse(R"({
    "input_shape": [3, 32, 32],
    "layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 5, "padding": 2},
               {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2, "bias": false},
               {"type": "avg_pool2d", "kernel_size": 3, "stride": 1}, {"type": "gelu"},
               {"type": "flatten"}, {"type": "layer_norm"}, {"type": "dropout", "p": 0.1},
               {"type": "linear", "out_features": 7, "bias": false}, {"type": "tanh"}]
  })");
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->layers[0].output_shape, (std::vector<int64_t>{8, 32, 32})) << "padding 2 keeps 32 with a 5x5 kernel";
  EXPECT_EQ(spec->layers[1].output_shape, (std::vector<int64_t>{8, 15, 15})) << "(32 - 3) / 2 + 1";
  EXPECT_EQ(spec->layers[2].output_shape, (std::vector<int64_t>{8, 13, 13}));
  EXPECT_EQ(spec->layers[4].output_shape, (std::vector<int64_t>{8 * 13 * 13}));
  EXPECT_DOUBLE_EQ(spec->layers[6].p, 0.1);
  EXPECT_EQ(spec->num_classes, 7) << "num_classes is inferred from the last layer when absent";
  const core::Manifest expected({{"layers.0.weight", core::DType::kFloat32, {8, 3, 5, 5}},
                                 {"layers.0.bias", core::DType::kFloat32, {8}},
                                 {"layers.1.weight", core::DType::kFloat32, {8, 8, 3, 3}},
                                 {"layers.5.weight", core::DType::kFloat32, {1352}},
                                 {"layers.5.bias", core::DType::kFloat32, {1352}},
                                 {"layers.7.weight", core::DType::kFloat32, {7, 1352}}});
  EXPECT_TRUE(expected.CheckSameAs(spec->ParameterManifest()).ok()) << expected.CheckSameAs(spec->ParameterManifest());
}

TEST(ModelSpecTest, AnEmbeddingAppendsItsDimensionAndHasOneWeight) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(json::parse(R"({"input_shape": [12], "num_classes": 3,
      "layers": [{"type": "embedding", "num_embeddings": 50, "embedding_dim": 8}, {"type": "layer_norm"},
                 {"type": "flatten"}, {"type": "linear", "out_features": 3}]})"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->layers[0].output_shape, (std::vector<int64_t>{12, 8}));
  EXPECT_EQ(spec->layers[1].in_features, 8);
  const core::Manifest manifest = spec->ParameterManifest();
  ASSERT_EQ(manifest.size(), 5u);
  EXPECT_EQ(manifest.tensors()[0].name, "layers.0.weight");
  EXPECT_EQ(manifest.tensors()[0].shape, (std::vector<int64_t>{50, 8}));
  EXPECT_EQ(spec->num_parameters(), 50 * 8 + 2 * 8 + 96 * 3 + 3);

  EXPECT_THAT(ErrorOf(json::parse(R"({"input_shape": [12], "num_classes": 3, "layers": [
      {"type": "embedding", "embedding_dim": 8}, {"type": "flatten"}, {"type": "linear", "out_features": 3}]})")),
              HasSubstr("model_config.layers[0] (embedding): needs num_embeddings and embedding_dim"));
  EXPECT_THAT(ErrorOf(json::parse(R"({"input_shape": [12], "num_classes": 3, "layers": [
      {"type": "embedding", "num_embeddings": 0, "embedding_dim": 8}]})")),
              HasSubstr("model_config.layers[0].num_embeddings: expected an integer in [1, 16777216], got 0"));
}

TEST(ModelSpecTest, KeepsTheConfigItWasParsedFrom) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(SmallCnn());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->config, SmallCnn());
}

TEST(ModelSpecTest, AnUnknownLayerTypeIsNamedWithItsIndex) {
  json config = SmallCnn();
  config["layers"][1]["type"] = "leaky_relu";
  const std::string msg = ErrorOf(config);
  EXPECT_THAT(msg, HasSubstr("model_config.layers[1].type: expected one of"));
  EXPECT_THAT(msg, HasSubstr("got \"leaky_relu\""));
}

TEST(ModelSpecTest, ALayerWithoutATypeIsNamed) {
  json config = SmallCnn();
  config["layers"][2] = json::object();
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config.layers[2].type: missing"));
  config["layers"][2] = "relu";
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config.layers[2]: expected a JSON object"));
}

TEST(ModelSpecTest, ALinearLayerWithoutFlattenIsRefused) {
  json config = SmallCnn();
  config["layers"].erase(3);  // the flatten
  const std::string msg = ErrorOf(config);
  EXPECT_THAT(msg, HasSubstr("model_config.layers[3] (linear): expects a flat input"));
  EXPECT_THAT(msg, HasSubstr("flatten"));
  EXPECT_THAT(msg, HasSubstr("input shape is [4, 13, 13]"));
}

TEST(ModelSpecTest, AConvKernelBiggerThanItsInputIsRefused) {
  json config = SmallCnn();
  config["layers"][0]["kernel_size"] = 29;
  const std::string msg = ErrorOf(config);
  EXPECT_THAT(msg, HasSubstr("model_config.layers[0] (conv2d): kernel larger than its input"));
  EXPECT_THAT(msg, HasSubstr("input shape is [1, 28, 28]"));
  const json exact = json::parse(R"({"input_shape": [1, 28, 28], "num_classes": 10,
    "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 28}, {"type": "flatten"},
               {"type": "linear", "out_features": 10}]})");
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(exact);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->layers[0].output_shape, (std::vector<int64_t>{4, 1, 1})) << "a kernel as large as the input";
}

TEST(ModelSpecTest, APoolingKernelBiggerThanItsInputIsRefused) {
  json config = SmallCnn();
  config["layers"][2] = {{"type", "max_pool2d"}, {"kernel_size", 27}, {"stride", 1}};  // input is 26x26
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config.layers[2] (max_pool2d): kernel larger than its input"));
}

// Output size is computed as (in - kernel) / stride + 1 with C++ integer division, which
// truncates toward zero: for kernel = in + 1 and stride >= 2 it gives 0 / ... + 1 = 1, so a
// kernel larger than its input is accepted whenever the stride is above 1, which is the
// default for pooling (stride = kernel). LibTorch then fails at the first forward pass.
TEST(ModelSpecTest, AKernelBiggerThanItsInputIsRefusedWhateverTheStride) {
  json pool = SmallCnn();
  pool["layers"][2] = {{"type", "max_pool2d"}, {"kernel_size", 27}};  // input is 26x26, stride defaults to 27
  EXPECT_THAT(ErrorOf(pool), HasSubstr("model_config.layers[2] (max_pool2d): kernel larger than its input"));
  json conv = SmallCnn();
  conv["layers"][0]["kernel_size"] = 29;
  conv["layers"][0]["stride"] = 2;
  EXPECT_THAT(ErrorOf(conv), HasSubstr("model_config.layers[0] (conv2d): kernel larger than its input"));
}

TEST(ModelSpecTest, ALastLayerOfTheWrongSizeIsRefused) {
  json config = SmallCnn();
  config["layers"][4]["out_features"] = 5;
  const std::string msg = ErrorOf(config);
  EXPECT_THAT(msg, HasSubstr("model_config.layers"));
  EXPECT_THAT(msg, HasSubstr("outputs 5 values but num_classes is 10"));
}

// The brief for these messages is that each names the layer as model_config.layers[i]; the
// last-layer check names only "model_config.layers", not which layer is the last.
TEST(ModelSpecTest, ALastLayerOfTheWrongSizeIsNamedWithItsIndex) {
  json config = SmallCnn();
  config["layers"][4]["out_features"] = 5;
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config.layers[4]"));
}

TEST(ModelSpecTest, AModelThatDoesNotEndFlatIsRefused) {
  json config = SmallCnn();
  config["layers"].erase(4);
  config["layers"].erase(3);
  EXPECT_THAT(ErrorOf(config), HasSubstr("the last layer must output class scores [10], got [4, 13, 13]"));
}

TEST(ModelSpecTest, AnUnknownKeyInALayerIsNamedWithItsPath) {
  json config = SmallCnn();
  config["layers"][2]["kernal_size"] = 2;
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config.layers[2].kernal_size: unknown key"));
  json relu = SmallCnn();
  relu["layers"][1]["inplace"] = true;
  EXPECT_THAT(ErrorOf(relu), HasSubstr("model_config.layers[1].inplace: unknown key"));
}

TEST(ModelSpecTest, BadLayerValuesNameTheKeyAndValue) {
  json config = SmallCnn();
  config["layers"][0]["out_channels"] = 0;
  EXPECT_THAT(ErrorOf(config), HasSubstr("model_config.layers[0].out_channels: expected an integer in [1, 65536], got 0"));
  json missing = SmallCnn();
  missing["layers"][0].erase("kernel_size");
  EXPECT_THAT(ErrorOf(missing), HasSubstr("model_config.layers[0] (conv2d): needs out_channels and kernel_size"));
}

TEST(ModelSpecTest, TopLevelErrorsAreNamed) {
  json unknown = SmallCnn();
  unknown["optimizer"] = "sgd";
  EXPECT_THAT(ErrorOf(unknown), HasSubstr("model_config.optimizer: unknown key"));
  json classes = SmallCnn();
  classes["num_classes"] = 1;
  EXPECT_THAT(ErrorOf(classes), HasSubstr("model_config.num_classes"));
  json shape = SmallCnn();
  shape["input_shape"] = {1, 0, 28};
  EXPECT_THAT(ErrorOf(shape), HasSubstr("model_config.input_shape: expected positive integers, got [1,0,28]"));
  json no_shape = SmallCnn();
  no_shape.erase("input_shape");
  EXPECT_THAT(ErrorOf(no_shape), HasSubstr("model_config.input_shape"));
  json no_layers = SmallCnn();
  no_layers["layers"] = json::array();
  EXPECT_THAT(ErrorOf(no_layers), HasSubstr("model_config.layers: expected a non-empty list"));
  json conv_on_flat = SmallCnn();
  conv_on_flat["input_shape"] = {784};
  EXPECT_THAT(ErrorOf(conv_on_flat), HasSubstr("model_config.layers[0] (conv2d): expects a C x H x W input"));
}

// The seeds' keys exactly, with no "layers": a decoder-only causal LM.
json SmallTransformer() {
  return json::parse(R"({"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 259,
                         "intermediate_size": 256, "max_position_embeddings": 128, "dropout": 0.1})");
}

TEST(TransformerSpecTest, TheSeedsKeysBuildADecoderWithPyTorchStateDictNames) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(SmallTransformer());
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->transformer.has_value());
  EXPECT_TRUE(spec->predicts_every_position());
  EXPECT_EQ(spec->num_classes, 259);
  EXPECT_TRUE(spec->layers.empty());
  const core::Manifest manifest = spec->ParameterManifest();
  // 2 embeddings, 16 per block, final norm 2; no separate output layer (tied embeddings).
  ASSERT_EQ(manifest.size(), 2u + 2 * 16 + 2);
  EXPECT_EQ(manifest.tensors()[0].name, "token_embedding.weight");
  EXPECT_EQ(manifest.tensors()[0].shape, (std::vector<int64_t>{259, 64}));
  EXPECT_EQ(manifest.tensors()[1].name, "position_embedding.weight");
  EXPECT_EQ(manifest.tensors()[4].name, "blocks.0.attention.query.weight");
  EXPECT_EQ(manifest.tensors()[14].name, "blocks.0.mlp_in.weight");
  EXPECT_EQ(manifest.tensors()[14].shape, (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(manifest.tensors().back().name, "final_norm.bias");
  // 259*64 + 128*64 + 2 * (4 * (64*64 + 64) + 2 * 2 * 64 + 256*64 + 256 + 64*256 + 64) + 2*64
  EXPECT_EQ(spec->num_parameters(), 259 * 64 + 128 * 64 + 2 * (4 * (64 * 64 + 64) + 4 * 64 + 2 * 256 * 64 + 256 + 64) +
                                        2 * 64);
  EXPECT_TRUE(spec->CheckExampleShape({64}, "training").ok());
  EXPECT_TRUE(spec->CheckExampleShape({128}, "training").ok());
  EXPECT_THAT(std::string(spec->CheckExampleShape({129}, "training").message()),
              HasSubstr("max_position_embeddings (128)"));
}

TEST(TransformerSpecTest, TheSeedsOwnExampleParsesWithDefaults) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(
      json::parse(R"({"num_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "vocab_size": 50265})"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->transformer->intermediate_size, 512);
  EXPECT_EQ(spec->transformer->max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(spec->transformer->dropout, 0.1);
}

TEST(TransformerSpecTest, AnEncoderNeedsNumClassesAndEndsInAClassifier) {
  json encoder = SmallTransformer();
  encoder["architecture"] = "encoder";
  EXPECT_THAT(ErrorOf(encoder), HasSubstr("model_config.num_classes: missing"));
  encoder["num_classes"] = 4;
  encoder["pooling"] = "first";
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(encoder);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->predicts_every_position());
  EXPECT_EQ(spec->num_classes, 4);
  EXPECT_EQ(spec->ParameterManifest().tensors().back().name, "classifier.bias");
  EXPECT_EQ(spec->ParameterManifest().tensors().back().shape, (std::vector<int64_t>{4}));
}

TEST(TransformerSpecTest, BadValuesAreRefusedNamingTheKey) {
  json indivisible = SmallTransformer();
  indivisible["num_attention_heads"] = 3;
  EXPECT_THAT(ErrorOf(indivisible), HasSubstr("model_config.hidden_size: 64 is not divisible by num_attention_heads 3"));
  json missing = SmallTransformer();
  missing.erase("vocab_size");
  EXPECT_THAT(ErrorOf(missing), HasSubstr("model_config.vocab_size: missing"));
  json zero = SmallTransformer();
  zero["num_layers"] = 0;
  EXPECT_THAT(ErrorOf(zero), HasSubstr("model_config.num_layers: expected an integer in [1,"));
  json negative = SmallTransformer();
  negative["hidden_size"] = -64;
  EXPECT_THAT(ErrorOf(negative), HasSubstr("model_config.hidden_size"));
  json dropout = SmallTransformer();
  dropout["dropout"] = 1.0;
  EXPECT_THAT(ErrorOf(dropout), HasSubstr("model_config.dropout"));
  json classes_on_decoder = SmallTransformer();
  classes_on_decoder["num_classes"] = 3;
  EXPECT_THAT(ErrorOf(classes_on_decoder), HasSubstr("model_config.num_classes: applies to \"architecture\": \"encoder\""));
  json unknown = SmallTransformer();
  unknown["num_heads"] = 4;
  EXPECT_THAT(ErrorOf(unknown), HasSubstr("model_config.num_heads: unknown key"));
}

TEST(TransformerSpecTest, AHostileConfigCannotAskForTerabytes) {
  // Every key within its own bound, the product far past kMaxModelBytes (64 GiB).
  json huge = json::parse(R"({"num_layers": 1024, "hidden_size": 65536, "num_attention_heads": 1024,
                              "vocab_size": 4194304, "intermediate_size": 262144})");
  const std::string message = ErrorOf(huge);
  EXPECT_THAT(message, HasSubstr("over the limit of"));
  EXPECT_THAT(message, HasSubstr("reduce num_layers, hidden_size"));
  json too_wide = SmallTransformer();
  too_wide["hidden_size"] = int64_t{1} << 40;
  EXPECT_THAT(ErrorOf(too_wide), HasSubstr("model_config.hidden_size: expected an integer in [1, 65536]"));
}

}  // namespace
}  // namespace cohort::training
