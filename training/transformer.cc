#include "training/transformer.h"

#include <cmath>
#include <limits>

namespace cohort::training {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

void Projection::AddAdapter(int64_t rank, double scaling) {
  const int64_t in = linear_->weight.size(1), out = linear_->weight.size(0);
  torch::Tensor a = torch::empty({rank, in});
  nn::init::kaiming_uniform_(a, std::sqrt(5.0));  // torch.nn.Linear's weight initialization
  lora_a_ = linear_->register_parameter("lora_A", a);
  lora_b_ = linear_->register_parameter("lora_B", torch::zeros({out, rank}));
  scaling_ = scaling;
}

torch::Tensor Projection::operator()(const torch::Tensor& x) {
  torch::Tensor y = linear_->forward(x);
  if (!lora_a_.defined()) return y;
  return y + scaling_ * torch::matmul(torch::matmul(x, lora_a_.t()), lora_b_.t());
}

SelfAttentionImpl::SelfAttentionImpl(int64_t hidden_size, int64_t num_heads, double dropout)
    : num_heads_(num_heads), dropout_(dropout) {
  query_ = Projection(register_module("query", nn::Linear(hidden_size, hidden_size)));
  key_ = Projection(register_module("key", nn::Linear(hidden_size, hidden_size)));
  value_ = Projection(register_module("value", nn::Linear(hidden_size, hidden_size)));
  output_ = Projection(register_module("output", nn::Linear(hidden_size, hidden_size)));
}

void SelfAttentionImpl::AddAdapters(const LoraSpec& lora) {
  for (auto [name, projection] : {std::pair{"query", &query_}, std::pair{"key", &key_}, std::pair{"value", &value_},
                                  std::pair{"output", &output_}}) {
    if (lora.targets_projection(name)) projection->AddAdapter(lora.rank, lora.scaling());
  }
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, bool causal) {
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2), d = h / num_heads_;
  auto heads = [&](const torch::Tensor& y) { return y.view({b, t, num_heads_, d}).transpose(1, 2); };  // [B, nh, T, d]
  const torch::Tensor q = heads(query_(x)), k = heads(key_(x)), v = heads(value_(x));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
  if (causal) {
    const torch::Tensor later = torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
    scores = scores.masked_fill(later, -std::numeric_limits<float>::infinity());
  }
  torch::Tensor weights = torch::softmax(scores, -1);
  weights = torch::dropout(weights, dropout_, is_training());
  return output_(torch::matmul(weights, v).transpose(1, 2).reshape({b, t, h}));
}

TransformerBlockImpl::TransformerBlockImpl(const TransformerSpec& spec) : dropout_(spec.dropout) {
  attention_norm_ = register_module("attention_norm", nn::LayerNorm(nn::LayerNormOptions({spec.hidden_size})));
  attention_ =
      register_module("attention", SelfAttention(spec.hidden_size, spec.num_attention_heads, spec.dropout));
  mlp_norm_ = register_module("mlp_norm", nn::LayerNorm(nn::LayerNormOptions({spec.hidden_size})));
  mlp_in_ = Projection(register_module("mlp_in", nn::Linear(spec.hidden_size, spec.intermediate_size)));
  mlp_out_ = Projection(register_module("mlp_out", nn::Linear(spec.intermediate_size, spec.hidden_size)));
}

void TransformerBlockImpl::AddAdapters(const LoraSpec& lora) {
  attention_->AddAdapters(lora);
  if (lora.targets_projection("mlp_in")) mlp_in_.AddAdapter(lora.rank, lora.scaling());
  if (lora.targets_projection("mlp_out")) mlp_out_.AddAdapter(lora.rank, lora.scaling());
}

torch::Tensor TransformerBlockImpl::forward(torch::Tensor x, bool causal) {
  x = x + torch::dropout(attention_->forward(attention_norm_(x), causal), dropout_, is_training());
  // Exact (erf) GELU, as torch.nn.GELU's default.
  return x + torch::dropout(mlp_out_(torch::gelu(mlp_in_(mlp_norm_(x)))), dropout_, is_training());
}

TransformerParts::TransformerParts(torch::nn::Module& owner, const TransformerSpec& spec) : spec_(spec) {
  token_embedding_ = owner.register_module("token_embedding", nn::Embedding(spec.vocab_size, spec.hidden_size));
  position_embedding_ =
      owner.register_module("position_embedding", nn::Embedding(spec.max_position_embeddings, spec.hidden_size));
  {
    torch::NoGradGuard no_grad;
    token_embedding_->weight.normal_(0, 0.02);
    position_embedding_->weight.normal_(0, 0.02);
  }
  blocks_ = owner.register_module("blocks", nn::ModuleList());
  for (int64_t i = 0; i < spec.num_layers; ++i) blocks_->push_back(TransformerBlock(spec));
  final_norm_ = owner.register_module("final_norm", nn::LayerNorm(nn::LayerNormOptions({spec.hidden_size})));
  if (!spec.causal()) classifier_ = owner.register_module("classifier", nn::Linear(spec.hidden_size, spec.num_classes));
  if (spec.lora) {
    if (spec.lora->targets_projection("token_embedding")) {
      torch::Tensor a = torch::empty({spec.lora->rank, spec.hidden_size});
      nn::init::kaiming_uniform_(a, std::sqrt(5.0));
      embedding_lora_a_ = token_embedding_->register_parameter("lora_A", a);
      embedding_lora_b_ = token_embedding_->register_parameter("lora_B", torch::zeros({spec.vocab_size, spec.lora->rank}));
      embedding_lora_scaling_ = spec.lora->scaling();
    }
    for (const auto& block : *blocks_) block->as<TransformerBlockImpl>()->AddAdapters(*spec.lora);
  }
}

torch::Tensor TransformerParts::forward(const torch::Tensor& tokens, bool training) {
  TORCH_CHECK(tokens.dim() == 2, "transformer: expected token ids [batch, positions], got ", tokens.sizes());
  const int64_t t = tokens.size(1);
  TORCH_CHECK(t <= spec_.max_position_embeddings, "transformer: ", t,
              " positions, more than model_config.max_position_embeddings ", spec_.max_position_embeddings);
  const torch::Tensor ids = tokens.to(torch::kLong);
  if (ids.numel() > 0) {
    const int64_t low = ids.min().item<int64_t>(), high = ids.max().item<int64_t>();
    TORCH_CHECK(low >= 0 && high < spec_.vocab_size, "transformer: token ids must be in [0, model_config.vocab_size = ",
                spec_.vocab_size, "), got ", low < 0 ? low : high);
  }
  torch::Tensor x = token_embedding_(ids) + position_embedding_->weight.slice(0, 0, t);
  // Factored, never W + B A itself: a vocabulary of 50,000 by 2,048 would cost 400 MB.
  if (embedding_lora_a_.defined()) {
    x = x + embedding_lora_scaling_ * torch::matmul(torch::embedding(embedding_lora_b_, ids), embedding_lora_a_);
  }
  x = torch::dropout(x, spec_.dropout, training);
  for (const auto& block : *blocks_) x = block->as<TransformerBlockImpl>()->forward(x, spec_.causal());
  x = final_norm_(x);
  if (spec_.causal()) {  // tied output embedding
    torch::Tensor logits = torch::matmul(x, token_embedding_->weight.t());
    if (embedding_lora_a_.defined()) {
      logits = logits + embedding_lora_scaling_ *
                            torch::matmul(torch::matmul(x, embedding_lora_a_.t()), embedding_lora_b_.t());
    }
    return logits;
  }
  const torch::Tensor pooled = spec_.pooling == "first" ? x.select(1, 0) : x.mean(1);
  return classifier_(pooled);
}

}  // namespace cohort::training
