#include "training/model_spec.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/config_reader.h"
#include "core/quote.h"

namespace cohort::training {
namespace {

std::string ShapeText(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

}  // namespace

absl::StatusOr<ModelSpec> ParseModelSpec(const nlohmann::json& config) {
  ModelSpec spec;
  spec.config = config;
  if (IsTransformerConfig(config)) {
    absl::StatusOr<TransformerSpec> transformer = ParseTransformerSpec(config);
    if (!transformer.ok()) return transformer.status();
    if (config.contains("name") && config["name"].is_string()) spec.name = config["name"].get<std::string>();
    spec.input_shape = {transformer->max_position_embeddings};
    spec.num_classes = transformer->output_classes();
    spec.transformer = std::move(*transformer);
    return spec;
  }
  core::ConfigReader top("model_config", config);
  top.String("name", &spec.name);
  top.Known("input_shape");
  top.Known("layers");
  int64_t num_classes = 0;
  top.Integer("num_classes", &num_classes, 2, 1 << 20);
  if (absl::Status s = top.Finish(); !s.ok()) return s;
  spec.num_classes = num_classes;
  if (!config.contains("input_shape") || !config["input_shape"].is_array() || config["input_shape"].empty()) {
    return absl::InvalidArgumentError("model_config.input_shape: expected a list of positive integers, e.g. [1, 28, 28]");
  }
  for (const auto& d : config["input_shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("model_config.input_shape: expected positive integers, got ",
                                                     core::JsonPrefix(config["input_shape"])));
    }
    spec.input_shape.push_back(d.get<int64_t>());
  }
  if (!config.contains("layers") || !config["layers"].is_array() || config["layers"].empty()) {
    return absl::InvalidArgumentError("model_config.layers: expected a non-empty list of layers");
  }

  std::vector<int64_t> shape = spec.input_shape;
  const nlohmann::json& layers = config["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string path = absl::StrCat("model_config.layers[", i, "]");
    LayerSpec layer;
    core::ConfigReader r(path, layers[i]);
    r.String("type", &layer.type,
             {"normalize", "conv2d", "max_pool2d", "avg_pool2d", "flatten", "linear", "layer_norm", "embedding",
              "dropout", "relu", "tanh", "sigmoid", "gelu"});
    if (absl::Status s = r.Finish(); !s.ok() && layer.type.empty()) return s;
    if (layer.type.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ".type: missing"));
    core::ConfigReader lr(path, layers[i]);
    lr.Known("type");
    auto fail = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(path, " (", layer.type, "): ", why, "; input shape is ",
                                                     ShapeText(shape)));
    };
    if (layer.type == "normalize") {
      lr.Number("mean", &layer.mean, -1e6, 1e6);
      lr.Number("std", &layer.std, 0, 1e6, /*min_exclusive=*/true);
    } else if (layer.type == "conv2d") {
      lr.Integer("out_channels", &layer.out_features, 1, 1 << 16);
      lr.Integer("kernel_size", &layer.kernel_size, 1, 1024);
      lr.Integer("stride", &layer.stride, 1, 1024);
      lr.Integer("padding", &layer.padding, 0, 1024);
      lr.Bool("bias", &layer.bias);
    } else if (layer.type == "max_pool2d" || layer.type == "avg_pool2d") {
      layer.stride = 0;
      lr.Integer("kernel_size", &layer.kernel_size, 1, 1024);
      lr.Integer("stride", &layer.stride, 1, 1024);
    } else if (layer.type == "linear") {
      lr.Integer("out_features", &layer.out_features, 1, 1 << 24);
      lr.Bool("bias", &layer.bias);
    } else if (layer.type == "dropout") {
      lr.Number("p", &layer.p, 0, 1);
    } else if (layer.type == "embedding") {
      lr.Integer("num_embeddings", &layer.in_features, 1, 1 << 24);
      lr.Integer("embedding_dim", &layer.out_features, 1, 1 << 16);
    }
    if (absl::Status s = lr.Finish(); !s.ok()) return s;

    if (layer.type == "conv2d") {
      if (layer.out_features == 0 || layer.kernel_size == 0) return fail("needs out_channels and kernel_size");
      if (shape.size() != 3) return fail("expects a C x H x W input");
      layer.in_features = shape[0];
      if (shape[1] + 2 * layer.padding < layer.kernel_size || shape[2] + 2 * layer.padding < layer.kernel_size) {
        return fail("kernel larger than its input");
      }
      const int64_t h = (shape[1] + 2 * layer.padding - layer.kernel_size) / layer.stride + 1;
      const int64_t w = (shape[2] + 2 * layer.padding - layer.kernel_size) / layer.stride + 1;
      if (h < 1 || w < 1) return fail("kernel larger than its input");
      shape = {layer.out_features, h, w};
    } else if (layer.type == "max_pool2d" || layer.type == "avg_pool2d") {
      if (layer.kernel_size == 0) return fail("needs kernel_size");
      if (layer.stride == 0) layer.stride = layer.kernel_size;
      if (shape.size() != 3) return fail("expects a C x H x W input");
      if (shape[1] < layer.kernel_size || shape[2] < layer.kernel_size) return fail("kernel larger than its input");
      const int64_t h = (shape[1] - layer.kernel_size) / layer.stride + 1;
      const int64_t w = (shape[2] - layer.kernel_size) / layer.stride + 1;
      if (h < 1 || w < 1) return fail("kernel larger than its input");
      shape = {shape[0], h, w};
    } else if (layer.type == "flatten") {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      shape = {n};
    } else if (layer.type == "linear") {
      if (layer.out_features == 0) return fail("needs out_features");
      if (shape.size() != 1) return fail("expects a flat input: add {\"type\": \"flatten\"} before it");
      layer.in_features = shape[0];
      shape = {layer.out_features};
    } else if (layer.type == "layer_norm") {
      layer.in_features = shape.back();
    } else if (layer.type == "embedding") {
      if (layer.in_features == 0 || layer.out_features == 0) return fail("needs num_embeddings and embedding_dim");
      shape.push_back(layer.out_features);
    }
    layer.output_shape = shape;
    spec.layers.push_back(layer);
  }
  const std::string last = absl::StrCat("model_config.layers[", layers.size() - 1, "]");
  if (shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(last, ": the last layer must output class scores [",
                                                   spec.num_classes, "], got ", ShapeText(shape)));
  }
  if (spec.num_classes == 0) spec.num_classes = shape[0];
  if (shape[0] != spec.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(last, ": the last layer outputs ", shape[0],
                                                   " values but num_classes is ", spec.num_classes));
  }
  return spec;
}

absl::Status ModelSpec::CheckExampleShape(const std::vector<int64_t>& shape, const std::string& which) const {
  if (transformer) {
    if (shape.size() == 1 && shape[0] >= 1 && shape[0] <= transformer->max_position_embeddings) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        which, " data has examples of shape ", ShapeText(shape), " but a transformer reads token sequences [T] with T <= ",
        "model_config.max_position_embeddings (", transformer->max_position_embeddings,
        "); lower data.sequence_length or raise max_position_embeddings"));
  }
  if (shape != input_shape) {
    return absl::InvalidArgumentError(absl::StrCat(which, " data has examples of shape ", ShapeText(shape),
                                                   " but model_config.input_shape is ", ShapeText(input_shape)));
  }
  return absl::OkStatus();
}

core::Manifest ModelSpec::BaseManifest() const {
  if (transformer) return core::Manifest(transformer->BaseParameters());
  return ParameterManifest();
}

core::Manifest ModelSpec::ParameterManifest() const {
  if (transformer) return core::Manifest(transformer->Parameters());
  std::vector<core::TensorSpec> tensors;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    const std::string prefix = absl::StrCat("layers.", i, ".");
    if (l.type == "conv2d") {
      tensors.push_back({prefix + "weight", core::DType::kFloat32,
                         {l.out_features, l.in_features, l.kernel_size, l.kernel_size}});
      if (l.bias) tensors.push_back({prefix + "bias", core::DType::kFloat32, {l.out_features}});
    } else if (l.type == "linear") {
      tensors.push_back({prefix + "weight", core::DType::kFloat32, {l.out_features, l.in_features}});
      if (l.bias) tensors.push_back({prefix + "bias", core::DType::kFloat32, {l.out_features}});
    } else if (l.type == "embedding") {
      tensors.push_back({prefix + "weight", core::DType::kFloat32, {l.in_features, l.out_features}});
    } else if (l.type == "layer_norm") {
      tensors.push_back({prefix + "weight", core::DType::kFloat32, {l.in_features}});
      tensors.push_back({prefix + "bias", core::DType::kFloat32, {l.in_features}});
    }
  }
  return core::Manifest(std::move(tensors));
}

int64_t ModelSpec::num_parameters() const { return static_cast<int64_t>(ParameterManifest().num_elements()); }

}  // namespace cohort::training
