#include "training/torch_model.h"

#include <cstring>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"

namespace cohort::training {

FloatIndexEmbeddingImpl::FloatIndexEmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim) {
  weight = register_parameter("weight", torch::randn({num_embeddings, embedding_dim}));
}

torch::Tensor FloatIndexEmbeddingImpl::Indices(const torch::Tensor& x) const {
  const torch::Tensor indices = x.to(torch::kLong);
  if (indices.numel() > 0) {
    const int64_t low = indices.min().item<int64_t>(), high = indices.max().item<int64_t>();
    TORCH_CHECK(low >= 0 && high < weight.size(0), "embedding: input values must be integers in [0, ",
                weight.size(0), "), got ", low < 0 ? low : high);
  }
  return indices;
}

torch::Tensor FloatIndexEmbeddingImpl::forward(torch::Tensor x) { return torch::embedding(weight, Indices(x)); }

CohortNetImpl::CohortNetImpl(const ModelSpec& spec) {
  namespace nn = torch::nn;
  if (spec.transformer) {
    transformer_.emplace(*this, *spec.transformer);
    if (spec.uses_lora()) FreezeBaseAndLoad(spec);
    return;
  }
  for (const LayerSpec& l : spec.layers) {
    if (l.type == "normalize") {
      const double mean = l.mean, std = l.std;
      layers_->push_back(nn::Functional([mean, std](torch::Tensor x) { return (x - mean) / std; }));
    } else if (l.type == "conv2d") {
      layers_->push_back(nn::Conv2d(nn::Conv2dOptions(l.in_features, l.out_features, l.kernel_size)
                                        .stride(l.stride)
                                        .padding(l.padding)
                                        .bias(l.bias)));
    } else if (l.type == "max_pool2d") {
      layers_->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(l.kernel_size).stride(l.stride)));
    } else if (l.type == "avg_pool2d") {
      layers_->push_back(nn::AvgPool2d(nn::AvgPool2dOptions(l.kernel_size).stride(l.stride)));
    } else if (l.type == "flatten") {
      layers_->push_back(nn::Flatten());
    } else if (l.type == "linear") {
      layers_->push_back(nn::Linear(nn::LinearOptions(l.in_features, l.out_features).bias(l.bias)));
    } else if (l.type == "layer_norm") {
      layers_->push_back(nn::LayerNorm(nn::LayerNormOptions({l.in_features})));
    } else if (l.type == "embedding") {
      layers_->push_back(FloatIndexEmbedding(l.in_features, l.out_features));
    } else if (l.type == "dropout") {
      layers_->push_back(nn::Dropout(nn::DropoutOptions(l.p)));
    } else if (l.type == "relu") {
      layers_->push_back(nn::ReLU());
    } else if (l.type == "tanh") {
      layers_->push_back(nn::Tanh());
    } else if (l.type == "sigmoid") {
      layers_->push_back(nn::Sigmoid());
    } else if (l.type == "gelu") {
      layers_->push_back(nn::GELU());
    }
  }
  register_module("layers", layers_);
}

namespace {

// Max pooling over windows that tile the input (kernel == stride, no padding, dilation 1,
// floor mode), or nullopt for any other pool. Rows and columns past the last whole window
// are dropped, as max_pool2d drops them.
std::optional<torch::Tensor> TiledMaxPool(const torch::nn::MaxPool2dImpl& pool, const torch::Tensor& x) {
  const torch::nn::MaxPool2dOptions& o = pool.options;
  const auto& kernel = *o.kernel_size();
  const auto& stride = *o.stride();
  const auto& padding = *o.padding();
  const auto& dilation = *o.dilation();
  if (o.ceil_mode() || x.dim() < 3) return std::nullopt;
  for (int d = 0; d < 2; ++d) {
    if (kernel[d] != stride[d] || padding[d] != 0 || dilation[d] != 1) return std::nullopt;
  }
  const int64_t kh = kernel[0], kw = kernel[1];
  const int64_t oh = x.size(-2) / kh, ow = x.size(-1) / kw;
  if (oh == 0 || ow == 0 || kh * kw < 2) return std::nullopt;  // max_pool2d's own error, or a copy
  torch::Tensor out;
  int64_t windows = 0;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      const torch::Tensor window = x.slice(-2, i, i + oh * kh, kh).slice(-1, j, j + ow * kw, kw);
      if (++windows == 1) {
        out = window;  // a view of x: never written
      } else if (windows == 2) {
        out = torch::maximum(out, window);  // from here on a tensor of this pass's own
      } else {
        torch::maximum_out(out, out, window);
      }
    }
  }
  return out;
}

// named_parameters() less the frozen ones: the trained tensors in state_dict order.
std::vector<std::pair<std::string, torch::Tensor>> NamedTrainable(CohortNet& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : net->named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

void CopyInto(torch::Tensor& destination, std::span<const std::byte> bytes) {
  if (destination.is_cpu()) {
    std::memcpy(destination.data_ptr<float>(), bytes.data(), bytes.size());
  } else {  // a model on a GPU: one host-to-device copy per tensor, once per round
    destination.copy_(torch::from_blob(const_cast<std::byte*>(bytes.data()), destination.sizes(), torch::kFloat32));
  }
}

}  // namespace

void CohortNetImpl::FreezeBaseAndLoad(const ModelSpec& spec) {
  torch::NoGradGuard no_grad;
  std::set<std::string> trained;
  const core::Manifest manifest = spec.ParameterManifest();  // held: the loop reads into it
  for (const core::TensorSpec& t : manifest.tensors()) trained.insert(t.name);
  for (auto& item : named_parameters(/*recurse=*/true)) item.value().requires_grad_(trained.count(item.key()) > 0);
  if (!spec.lora_base) return;
  // Every tensor but the adapters starts from the base, also those trained in full (norms,
  // an encoder's head), so that the job's first model is the base model exactly.
  const core::ParameterSet& base = *spec.lora_base;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    if (item.key().ends_with(".lora_A") || item.key().ends_with(".lora_B")) continue;
    const int i = base.Find(item.key());
    TORCH_CHECK(i >= 0 && base.manifest().tensors()[static_cast<size_t>(i)].shape == item.value().sizes().vec(),
                "LoRA base model: no tensor ", item.key(), " ", item.value().sizes());
    CopyInto(item.value(), base.tensor_bytes(static_cast<size_t>(i)));
  }
}

torch::Tensor CohortNetImpl::InferenceForward(torch::Tensor x) {
  if (transformer_) return forward(x);
  const auto max_pool = [&x](torch::nn::MaxPool2dImpl& pool) {
    std::optional<torch::Tensor> tiled = TiledMaxPool(pool, x);
    x = tiled ? *std::move(tiled) : pool.forward(x);
  };
  // Whether x was computed by this pass (so it may be overwritten), rather than the
  // caller's input or a view of it.
  bool owned = false;
  const size_t n = layers_->size();
  for (size_t i = 0; i < n; ++i) {
    if (layers_->ptr(i)->as<torch::nn::ReLU>() != nullptr) {
      if (auto* next_pool = i + 1 < n ? layers_->ptr(i + 1)->as<torch::nn::MaxPool2d>() : nullptr) {
        ++i;  // pool first, then the ReLU over a quarter (for 2x2) of the values
        max_pool(*next_pool);
        owned = true;
      }
      x = owned ? x.clamp_min_(0) : torch::relu(x);
      owned = true;
    } else if (auto* pool = layers_->ptr(i)->as<torch::nn::MaxPool2d>(); pool != nullptr) {
      max_pool(*pool);
      owned = true;
    } else {
      const torch::Tensor in = x;
      x = (layers_->begin() + static_cast<std::ptrdiff_t>(i))->forward(x);
      // Flatten gives a view and eval-mode dropout its input: neither makes x this pass's.
      owned = owned || !x.is_alias_of(in);
    }
  }
  return x;
}

std::vector<torch::Tensor> TrainableParameters(CohortNet& net) {
  std::vector<torch::Tensor> out;
  for (auto& [name, tensor] : NamedTrainable(net)) out.push_back(tensor);
  return out;
}

absl::Status LoadParameters(CohortNet& net, const core::ParameterSet& parameters) {
  torch::NoGradGuard no_grad;
  auto named = NamedTrainable(net);
  const core::Manifest& manifest = parameters.manifest();
  if (named.size() != manifest.size()) {
    return absl::InvalidArgumentError(absl::StrCat("model has ", named.size(), " parameter tensors, the set has ",
                                                   manifest.size()));
  }
  for (size_t i = 0; i < named.size(); ++i) {
    auto& [name, tensor] = named[i];
    const core::TensorSpec& spec = manifest.tensors()[i];
    if (name != spec.name || tensor.sizes().vec() != spec.shape || spec.dtype != core::DType::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", i, ": model expects ", name, " ",
                                                     c10::str(tensor.sizes()), ", the set has ", spec.name, " ",
                                                     spec.ShapeString()));
    }
    CopyInto(tensor, parameters.tensor_bytes(i));
  }
  return absl::OkStatus();
}

absl::Status BindParameters(CohortNet& net, const core::Manifest& expected, const core::ParameterSet& parameters) {
  if (absl::Status s = expected.CheckSameAs(parameters.manifest()); !s.ok()) return s;
  torch::NoGradGuard no_grad;
  auto named = NamedTrainable(net);
  if (named.size() != expected.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model has ", named.size(), " parameter tensors, the set has ", expected.size()));
  }
  for (size_t i = 0; i < named.size(); ++i) {
    const core::TensorSpec& spec = expected.tensors()[i];
    // from_blob wants a mutable pointer; evaluation only reads through it.
    auto* data = const_cast<std::byte*>(parameters.tensor_bytes(i).data());
    named[i].second.set_data(torch::from_blob(data, spec.shape, torch::kFloat32));
  }
  return absl::OkStatus();
}

void UnbindParameters(CohortNet& net) {
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : NamedTrainable(net)) tensor.set_data(torch::empty({0}, torch::kFloat32));
}

void WriteDeltaOver(CohortNet& net, core::ParameterSet& global) {
  const auto named = NamedTrainable(net);
  for (size_t i = 0; i < named.size() && i < global.manifest().size(); ++i) {
    const torch::Tensor t = named[i].second.detach().to(torch::kCPU).contiguous();
    const float* trained = t.data_ptr<float>();
    const std::span<std::byte> bytes = global.tensor_bytes(i);
    float* d = reinterpret_cast<float*>(bytes.data());
    const size_t n = bytes.size() / sizeof(float);
    for (size_t j = 0; j < n; ++j) d[j] = trained[j] - d[j];
  }
}

core::ParameterSet ExtractParameters(CohortNet& net, const core::Manifest& manifest) {
  core::ParameterSet out(manifest);
  const auto named = NamedTrainable(net);
  for (size_t i = 0; i < named.size() && i < manifest.size(); ++i) {
    const torch::Tensor t = named[i].second.detach().to(torch::kCPU).contiguous();
    const auto bytes = out.tensor_bytes(i);
    std::memcpy(bytes.data(), t.data_ptr<float>(), bytes.size());
  }
  return out;
}

std::unique_ptr<torch::optim::Optimizer> NewOptimizer(std::vector<torch::Tensor> parameters,
                                                      const core::TrainingConfig& config) {
  if (config.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(std::move(parameters), torch::optim::AdamOptions(config.learning_rate)
                                                                           .betas({config.beta1, config.beta2})
                                                                           .eps(config.eps)
                                                                           .weight_decay(config.weight_decay));
  }
  if (config.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(std::move(parameters), torch::optim::AdamWOptions(config.learning_rate)
                                                                            .betas({config.beta1, config.beta2})
                                                                            .eps(config.eps)
                                                                            .weight_decay(config.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(std::move(parameters), torch::optim::SGDOptions(config.learning_rate)
                                                                        .momentum(config.momentum)
                                                                        .nesterov(config.nesterov)
                                                                        .weight_decay(config.weight_decay));
}

}  // namespace cohort::training
