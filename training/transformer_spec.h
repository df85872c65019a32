#pragma once
// Transformers as data, from the keys practitioners already write in a `model_config`
// (no "layers" key):
//
//   {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 259,
//    "intermediate_size": 256, "max_position_embeddings": 128, "dropout": 0.1}
//
// builds a decoder-only causal language model; `"architecture": "encoder"` with
// `"num_classes"` builds a sequence classifier. Both are pre-norm stacks of blocks
// (LayerNorm -> multi-head self-attention -> residual, LayerNorm -> GELU MLP -> residual)
// over learned token and position embeddings, with a final LayerNorm. The decoder masks
// attention to later positions and reads its logits through the token embedding (tied
// weights); the encoder attends everywhere and pools (mean over positions, or the first
// token) into a linear classifier. Inputs are token ids held as floats, [T] per example,
// T <= max_position_embeddings. No LibTorch here: the module is training/transformer.h, its
// Python twin `CohortTransformer` in examples/python/cohort_models.py.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::training {

// LoRA (low-rank adaptation) of a transformer, `model_config.lora`:
//
//   "lora": {"rank": 8, "alpha": 16, "targets": ["query", "value"], "train_norms": true,
//            "base_model": "runs/base/model.pt", "base_sha256": "..."}
//
// Every weight of the base model is frozen; each targeted projection W [out, in] of every
// block gains two trainable matrices, lora_A [rank, in] (Kaiming-uniform) and lora_B
// [out, rank] (zeros, so training starts from the base model exactly), and computes
// W x + b + (alpha / rank) * B (A x). Only the adapters (and an encoder's classifier, which
// the base model has not learned) are trained, travel and are aggregated: they are the
// federated model. The base model is a PyTorch state_dict file (a `model.pt` of an earlier
// job of the same transformer without "lora"), read where the model is built: by the
// server from `base_model`, by each site from its own copy (`cohort client --base-model`,
// else `base_model`), and checked there against `base_sha256` (which the server fills in
// from its file when the config has none, so every site checks the server's file).
struct LoraSpec {
  int64_t rank = 0;
  double alpha = 0;                  // default: rank (a scaling of 1)
  std::vector<std::string> targets;  // of kLoraTargets
  // The LayerNorms' weights and biases are trained in full and travel with the adapters
  // (2 x hidden_size per norm: 4 per block and the final one). They let the model shift its
  // features' scale and offset, and through the tied output embedding the next-token
  // frequencies, to a new text, which low-rank updates of the projections do poorly.
  bool train_norms = false;
  std::string base_model;
  std::string base_sha256;           // lowercase hex; empty until known
  double scaling() const { return alpha / static_cast<double>(rank); }
  bool targets_projection(const std::string& name) const;
};

// What LoRA may adapt: the tied token embedding (its adapter moves both the input
// embedding and the output logits), then the projections in the order a block holds them.
inline constexpr const char* kLoraTargets[] = {"token_embedding", "query", "key",   "value",
                                               "output",          "mlp_in", "mlp_out"};

struct TransformerSpec {
  std::string architecture = "decoder";  // decoder (causal LM) | encoder (classifier)
  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_attention_heads = 0;
  int64_t vocab_size = 0;
  int64_t intermediate_size = 0;          // default 4 * hidden_size
  int64_t max_position_embeddings = 512;
  double dropout = 0.1;                   // on embeddings, attention weights, each residual branch
  int64_t num_classes = 0;                // encoder only
  std::string pooling = "mean";           // encoder only: mean | first
  std::string tokenizer = "bytes";        // training/text_data.h: ByteTokenizer
  std::optional<LoraSpec> lora;

  bool causal() const { return architecture == "decoder"; }
  int64_t head_size() const { return hidden_size / num_attention_heads; }
  // Output classes per position (decoder: vocab_size) or per sequence (encoder).
  int64_t output_classes() const { return causal() ? vocab_size : num_classes; }
  // The parameter tensors that are trained and travel, in state_dict order: BaseParameters(),
  // or with LoRA the adapters (<path>.lora_A, .lora_B of each target of every block, and
  // token_embedding.lora_A [rank, hidden], .lora_B [vocab, rank] when it is a target), the
  // norms with train_norms, and an encoder's classifier.
  std::vector<core::TensorSpec> Parameters() const;
  // Every tensor of the transformer without adapters, in state_dict order: token_embedding,
  // position_embedding, blocks.<i>.{attention_norm, attention.{query,key,value,output},
  // mlp_norm, mlp_in, mlp_out}, final_norm, and (encoder) classifier. With LoRA: the base
  // model's layout.
  std::vector<core::TensorSpec> BaseParameters() const;
};

// Whether `config` describes a transformer (it has no "layers" but a transformer key).
bool IsTransformerConfig(const nlohmann::json& config);

// Strict parse; errors name the key (`model_config.hidden_size: 100 is not divisible by
// num_attention_heads 3`). Sizes are bounded so that no config asks for more than
// core::kMaxModelBytes of parameters.
absl::StatusOr<TransformerSpec> ParseTransformerSpec(const nlohmann::json& config);

}  // namespace cohort::training
