#include "training/transformer_spec.h"

#include "absl/strings/str_cat.h"
#include "core/config_reader.h"
#include "core/limits.h"

namespace cohort::training {
namespace {

// Per-key bounds: generous for this project's machines, and small enough that products of
// them cannot overflow int64 before the total is checked against kMaxModelBytes.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxIntermediate = 1 << 18;
// Attention holds a T x T matrix per head and example: bounding T keeps one example's
// activations reasonable whatever the parameter count.
constexpr int64_t kMaxPositions = 1 << 14;

constexpr const char* kTransformerKeys[] = {"num_layers", "hidden_size", "num_attention_heads", "vocab_size",
                                            "intermediate_size", "max_position_embeddings", "dropout",
                                            "architecture", "num_classes", "pooling", "tokenizer"};

}  // namespace

bool IsTransformerConfig(const nlohmann::json& config) {
  if (!config.is_object() || config.contains("layers")) return false;
  for (const char* key : kTransformerKeys) {
    if (config.contains(key) && std::string(key) != "num_classes") return true;
  }
  return false;
}

absl::StatusOr<TransformerSpec> ParseTransformerSpec(const nlohmann::json& config) {
  TransformerSpec t;
  core::ConfigReader r("model_config", config);
  std::string name;
  r.String("name", &name);
  r.String("architecture", &t.architecture, {"decoder", "encoder"});
  r.Integer("num_layers", &t.num_layers, 1, kMaxLayers);
  r.Integer("hidden_size", &t.hidden_size, 1, kMaxHidden);
  r.Integer("num_attention_heads", &t.num_attention_heads, 1, kMaxHeads);
  r.Integer("vocab_size", &t.vocab_size, 1, kMaxVocab);
  r.Integer("intermediate_size", &t.intermediate_size, 1, kMaxIntermediate);
  r.Integer("max_position_embeddings", &t.max_position_embeddings, 1, kMaxPositions);
  r.Number("dropout", &t.dropout, 0, 1);
  r.Integer("num_classes", &t.num_classes, 2, 1 << 20);
  r.String("pooling", &t.pooling, {"mean", "first"});
  r.String("tokenizer", &t.tokenizer, {"bytes"});
  if (absl::Status s = r.Finish(); !s.ok()) return s;

  auto missing = [](const char* key, const char* example) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_config.", key, ": missing; a transformer needs num_layers, hidden_size, "
                     "num_attention_heads and vocab_size (e.g. \"", key, "\": ", example, ")"));
  };
  if (t.num_layers == 0) return missing("num_layers", "2");
  if (t.hidden_size == 0) return missing("hidden_size", "64");
  if (t.num_attention_heads == 0) return missing("num_attention_heads", "4");
  if (t.vocab_size == 0) return missing("vocab_size", "259");
  if (t.hidden_size % t.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model_config.hidden_size: ", t.hidden_size,
                                                   " is not divisible by num_attention_heads ", t.num_attention_heads,
                                                   "; each head gets hidden_size / num_attention_heads dimensions"));
  }
  if (t.dropout >= 1) {
    return absl::InvalidArgumentError(absl::StrCat("model_config.dropout: expected a number in [0, 1), got ", t.dropout));
  }
  if (t.intermediate_size == 0) t.intermediate_size = std::min<int64_t>(4 * t.hidden_size, kMaxIntermediate);
  if (t.architecture == "encoder" && t.num_classes == 0) {
    return absl::InvalidArgumentError(
        "model_config.num_classes: missing; \"architecture\": \"encoder\" classifies sequences into num_classes "
        "classes (e.g. \"num_classes\": 4)");
  }
  if (t.architecture == "decoder") {
    for (const char* key : {"num_classes", "pooling"}) {
      if (config.contains(key)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model_config.", key, ": applies to \"architecture\": \"encoder\" only; a decoder predicts the next "
            "token over vocab_size classes"));
      }
    }
  }
  uint64_t elements = 0;
  for (const core::TensorSpec& tensor : t.Parameters()) {
    uint64_t n = 1;
    for (int64_t d : tensor.shape) n *= static_cast<uint64_t>(d);  // each factor < 2^22: no overflow
    elements += n;
  }
  if (elements * 4 > core::kMaxModelBytes) {
    return absl::InvalidArgumentError(absl::StrCat("model_config: this transformer has ", elements,
                                                   " parameters (", elements * 4, " bytes), over the limit of ",
                                                   core::kMaxModelBytes, " bytes; reduce num_layers, hidden_size, "
                                                   "intermediate_size or vocab_size"));
  }
  return t;
}

std::vector<core::TensorSpec> TransformerSpec::Parameters() const {
  const int64_t h = hidden_size;
  std::vector<core::TensorSpec> out;
  auto add = [&out](std::string name, std::vector<int64_t> shape) {
    out.push_back({std::move(name), core::DType::kFloat32, std::move(shape)});
  };
  auto add_norm = [&](const std::string& prefix) {
    add(prefix + ".weight", {h});
    add(prefix + ".bias", {h});
  };
  auto add_linear = [&](const std::string& prefix, int64_t in, int64_t o) {
    add(prefix + ".weight", {o, in});
    add(prefix + ".bias", {o});
  };
  add("token_embedding.weight", {vocab_size, h});
  add("position_embedding.weight", {max_position_embeddings, h});
  for (int64_t i = 0; i < num_layers; ++i) {
    const std::string block = absl::StrCat("blocks.", i, ".");
    add_norm(block + "attention_norm");
    for (const char* projection : {"query", "key", "value", "output"}) {
      add_linear(absl::StrCat(block, "attention.", projection), h, h);
    }
    add_norm(block + "mlp_norm");
    add_linear(block + "mlp_in", h, intermediate_size);
    add_linear(block + "mlp_out", intermediate_size, h);
  }
  add_norm("final_norm");
  if (!causal()) add_linear("classifier", h, num_classes);
  return out;
}

}  // namespace cohort::training
