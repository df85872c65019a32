#include "training/transformer_spec.h"

#include <algorithm>

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

bool IsLowerHex(const std::string& text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// `model_config.lora`, checked against the transformer it adapts.
absl::StatusOr<LoraSpec> ParseLoraSpec(const nlohmann::json& json, const TransformerSpec& t) {
  LoraSpec lora;
  core::ConfigReader r("model_config.lora", json);
  r.Integer("rank", &lora.rank, 1, 4096);
  r.Number("alpha", &lora.alpha, 0, 1e6, /*min_exclusive=*/true);
  r.NameList("targets", &lora.targets);
  r.Bool("train_norms", &lora.train_norms);
  r.String("base_model", &lora.base_model);
  r.String("base_sha256", &lora.base_sha256);
  if (absl::Status s = r.Finish(); !s.ok()) return s;
  if (lora.rank == 0) {
    return absl::InvalidArgumentError(
        "model_config.lora.rank: missing; the adapters' rank (e.g. \"rank\": 8) is required");
  }
  if (lora.alpha == 0) lora.alpha = static_cast<double>(lora.rank);
  const std::string all =
      "\"token_embedding\", \"query\", \"key\", \"value\", \"output\", \"mlp_in\", \"mlp_out\"";
  if (lora.targets.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model_config.lora.targets: missing or empty; name the projections to adapt, of ", all,
        " (e.g. [\"query\", \"value\"])"));
  }
  for (const std::string& target : lora.targets) {
    bool known = false;
    for (const char* name : kLoraTargets) known = known || target == name;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("model_config.lora.targets: unknown projection \"",
                                                     target.substr(0, 32), "\"; expected some of ", all));
    }
  }
  int64_t narrowest = std::min(t.hidden_size, t.intermediate_size);
  if (lora.targets_projection("token_embedding")) narrowest = std::min(narrowest, t.vocab_size);
  if (lora.rank > narrowest) {
    return absl::InvalidArgumentError(absl::StrCat("model_config.lora.rank: ", lora.rank,
                                                   " is larger than the narrowest adapted dimension (", narrowest,
                                                   "); a low-rank adapter needs rank < that"));
  }
  if (lora.base_model.empty()) {
    return absl::InvalidArgumentError(
        "model_config.lora.base_model: missing; LoRA adapts a trained base model: name its state_dict file "
        "(e.g. the model.pt of an earlier job of this transformer without \"lora\")");
  }
  if (!lora.base_sha256.empty() && (lora.base_sha256.size() != 64 || !IsLowerHex(lora.base_sha256))) {
    return absl::InvalidArgumentError(
        "model_config.lora.base_sha256: expected 64 lowercase hex digits (as `sha256sum` prints them)");
  }
  return lora;
}

}  // namespace

bool LoraSpec::targets_projection(const std::string& name) const {
  return std::find(targets.begin(), targets.end(), name) != targets.end();
}

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
  r.Known("lora");
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
  for (const core::TensorSpec& tensor : t.BaseParameters()) {
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
  if (config.contains("lora")) {
    absl::StatusOr<LoraSpec> lora = ParseLoraSpec(config["lora"], t);
    if (!lora.ok()) return lora.status();
    t.lora = std::move(*lora);
  }
  return t;
}

std::vector<core::TensorSpec> TransformerSpec::Parameters() const {
  if (!lora) return BaseParameters();
  // The base's order, keeping what is trained: a module's own tensors come before its
  // children's, and an adapter is registered on its projection after the weight and bias.
  std::vector<core::TensorSpec> out;
  for (core::TensorSpec& tensor : BaseParameters()) {
    const std::string& name = tensor.name;
    const bool norm = name.find("_norm.") != std::string::npos;
    if ((norm && lora->train_norms) || name.starts_with("classifier.")) {
      out.push_back(tensor);  // trained in full: norms on request, an encoder's new head always
      continue;
    }
    if (name == "token_embedding.weight" && lora->targets_projection("token_embedding")) {
      // W + scaling * B A, as a projection's: B [vocab, rank] picks a row per token.
      out.push_back({"token_embedding.lora_A", core::DType::kFloat32, {lora->rank, hidden_size}});
      out.push_back({"token_embedding.lora_B", core::DType::kFloat32, {vocab_size, lora->rank}});
      continue;
    }
    if (!name.ends_with(".bias")) continue;
    const std::string path = name.substr(0, name.size() - std::string(".bias").size());
    const std::string projection = path.substr(path.rfind('.') + 1);
    if (!name.starts_with("blocks.") || !lora->targets_projection(projection)) continue;
    const int64_t out_features = tensor.shape[0];
    const int64_t in_features = projection == "mlp_out" ? intermediate_size : hidden_size;
    out.push_back({path + ".lora_A", core::DType::kFloat32, {lora->rank, in_features}});
    out.push_back({path + ".lora_B", core::DType::kFloat32, {out_features, lora->rank}});
  }
  return out;
}

std::vector<core::TensorSpec> TransformerSpec::BaseParameters() const {
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
