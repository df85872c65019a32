#pragma once
// Internal to the training layer (includes LibTorch): the transformer of a TransformerSpec
// (training/transformer_spec.h) as LibTorch modules. Its parts are registered on the module
// that owns them (CohortNet) under the names of the Python twin `CohortTransformer`
// (examples/python/cohort_models.py), so state_dict keys match: `token_embedding.weight`,
// `blocks.0.attention.query.weight`, ...

#include <torch/torch.h>

#include "training/transformer_spec.h"

namespace cohort::training {

// A linear projection, with an optional LoRA adapter (transformer_spec.h LoraSpec) whose
// matrices are registered on the projection's own module, so that their keys read
// `<path>.lora_A` and `<path>.lora_B` beside `<path>.weight` (as in the Python twin).
class Projection {
 public:
  Projection() = default;
  explicit Projection(torch::nn::Linear linear) : linear_(std::move(linear)) {}
  // lora_A [rank, in] Kaiming-uniform (as torch.nn.Linear's weight), lora_B [out, rank] zeros.
  void AddAdapter(int64_t rank, double scaling);
  // W x + b, plus scaling * B (A x) with an adapter.
  torch::Tensor operator()(const torch::Tensor& x);

 private:
  torch::nn::Linear linear_{nullptr};
  torch::Tensor lora_a_, lora_b_;  // undefined without an adapter
  double scaling_ = 0;
};

// Multi-head self-attention with separate query, key, value and output projections (so that
// each can be adapted or inspected on its own). `causal`: position t attends to 0..t only.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t hidden_size, int64_t num_heads, double dropout);
  torch::Tensor forward(const torch::Tensor& x, bool causal);
  void AddAdapters(const LoraSpec& lora);

 private:
  int64_t num_heads_;
  double dropout_;
  Projection query_, key_, value_, output_;
};
TORCH_MODULE(SelfAttention);

// Pre-norm block: x + attention(norm(x)), then x + mlp(norm(x)), GELU between the MLP's two
// linear layers, dropout on each branch's output.
class TransformerBlockImpl : public torch::nn::Module {
 public:
  explicit TransformerBlockImpl(const TransformerSpec& spec);
  torch::Tensor forward(torch::Tensor x, bool causal);
  void AddAdapters(const LoraSpec& lora);

 private:
  double dropout_;
  torch::nn::LayerNorm attention_norm_{nullptr};
  SelfAttention attention_{nullptr};
  torch::nn::LayerNorm mlp_norm_{nullptr};
  Projection mlp_in_, mlp_out_;
};
TORCH_MODULE(TransformerBlock);

// The embeddings, blocks, final norm and (encoder) classifier, registered on `owner`, and
// with spec.lora the adapters of the targeted projections (the caller freezes the rest).
// Embeddings start N(0, 0.02) (GPT-2's initialization: with tied output weights, N(0, 1)
// would start from huge logits); linear layers and norms keep LibTorch's defaults.
class TransformerParts {
 public:
  TransformerParts(torch::nn::Module& owner, const TransformerSpec& spec);
  // `tokens`: [B, T] token ids held as floats (data sets hold floats), T <= max positions.
  // Returns [B, T, vocab_size] next-token logits (decoder) or [B, num_classes] (encoder).
  // Fails (c10::Error) naming the value when an id is outside [0, vocab_size).
  torch::Tensor forward(const torch::Tensor& tokens, bool training);

 private:
  TransformerSpec spec_;
  torch::nn::Embedding token_embedding_{nullptr}, position_embedding_{nullptr};
  // With "token_embedding" among the LoRA targets: W + scaling * B A in factored form,
  // registered on the embedding as lora_A [rank, hidden] (Kaiming-uniform) and lora_B
  // [vocab, rank] (zeros); undefined otherwise.
  torch::Tensor embedding_lora_a_, embedding_lora_b_;
  double embedding_lora_scaling_ = 0;
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Linear classifier_{nullptr};
};

}  // namespace cohort::training
