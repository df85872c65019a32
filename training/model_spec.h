#pragma once
// Models as data: a `model_config` JSON lists layers in order; this parses and checks it,
// infers every layer's output shape and the model's parameter manifest, without LibTorch.
// The LibTorch module (model_zoo.h) and the Python twin (examples/python/cohort_models.py)
// build the same layers, so state_dict keys match: `layers.<index>.weight|bias`.
//
//   {"name": "niid_cnn", "input_shape": [1, 28, 28], "num_classes": 10,
//    "layers": [{"type": "normalize", "mean": 0.286, "std": 0.353},
//               {"type": "conv2d", "out_channels": 6, "kernel_size": 5}, {"type": "relu"},
//               {"type": "max_pool2d", "kernel_size": 2}, ... {"type": "linear", "out_features": 10}]}
//
// Layer types and their keys (defaults in parentheses):
//   normalize   mean, std              (x - mean) / std; no parameters
//   conv2d      out_channels, kernel_size, stride (1), padding (0), bias (true)
//   max_pool2d  kernel_size, stride (kernel_size)
//   avg_pool2d  kernel_size, stride (kernel_size)
//   flatten
//   linear      out_features, bias (true)
//   layer_norm  over the last dimension; weight and bias
//   embedding   num_embeddings, embedding_dim: each input value, a float holding an integer
//               in [0, num_embeddings), is cast to an index and replaced by its row of the
//               weight [num_embeddings, embedding_dim]; output shape is input shape + [dim]
//   dropout     p (0.5)
//   relu | tanh | sigmoid | gelu
//
// A model_config without "layers" but with transformer keys ("num_layers", "hidden_size",
// ...) describes a transformer instead: training/transformer_spec.h.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"
#include "training/transformer_spec.h"

namespace cohort::training {

struct LayerSpec {
  std::string type;
  // Resolved sizes (after shape inference).
  int64_t in_features = 0, out_features = 0;   // linear; conv2d channels; layer_norm size;
                                               // embedding: num_embeddings, embedding_dim
  int64_t kernel_size = 0, stride = 1, padding = 0;
  bool bias = true;
  double mean = 0, std = 1, p = 0.5;
  std::vector<int64_t> output_shape;           // per example
};

struct ModelSpec {
  std::string name;
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;
  std::vector<LayerSpec> layers;
  nlohmann::json config;  // the JSON it was parsed from
  // Set when model_config describes a transformer; `layers` is then empty, input_shape is
  // [max_position_embeddings] and num_classes the classes of each prediction.
  std::optional<TransformerSpec> transformer;
  // With transformer->lora: the base model's weights, laid out as BaseManifest(), which the
  // LibTorch module loads into its frozen tensors. Set by training::LoadLoraBase
  // (training/lora.h); shared by every copy of the spec.
  std::shared_ptr<const core::ParameterSet> lora_base;

  // A causal language model: its labels are the next token at every position, [T] per
  // example, and its output is [T, vocab_size] per example.
  bool predicts_every_position() const { return transformer && transformer->causal(); }
  // OK when examples of `shape` fit the model: exactly input_shape, or for a transformer
  // [T] with 1 <= T <= max_position_embeddings. `which` names the data ("training").
  absl::Status CheckExampleShape(const std::vector<int64_t>& shape, const std::string& which) const;

  // The parameter tensors that are trained and travel (with LoRA: the adapters), in
  // state_dict order, all float32.
  core::Manifest ParameterManifest() const;
  // Every tensor of the model without adapters: ParameterManifest() unless LoRA adapts it.
  core::Manifest BaseManifest() const;
  bool uses_lora() const { return transformer && transformer->lora.has_value(); }
  int64_t num_parameters() const;
};

absl::StatusOr<ModelSpec> ParseModelSpec(const nlohmann::json& config);

}  // namespace cohort::training
