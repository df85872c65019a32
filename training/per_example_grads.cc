#include "training/per_example_grads.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "training/torch_model.h"

namespace cohort::training {
namespace {

namespace F = torch::nn::functional;

// A conv2d's geometry, when its per-example gradients are a grouped correlation (no groups
// or dilation of its own, zero padding).
struct ConvGeometry {
  int64_t kh, kw, sh, sw, ph, pw;
};

std::optional<ConvGeometry> GeometryOf(const torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  if (padding == nullptr || o.groups() != 1 || (*o.dilation())[0] != 1 || (*o.dilation())[1] != 1 ||
      o.transposed() || !c10::get_if<torch::enumtype::kZeros>(&o.padding_mode())) {
    return std::nullopt;
  }
  return ConvGeometry{(*o.kernel_size())[0], (*o.kernel_size())[1], (*o.stride())[0], (*o.stride())[1],
                      (**padding)[0],        (**padding)[1]};
}

int64_t ChunkOf(int64_t floats_per_example) {
  return std::max<int64_t>(1, PerExampleGradients::kChunkFloats / std::max<int64_t>(1, floats_per_example));
}

}  // namespace

absl::StatusOr<PerExampleGradients> PerExampleGradients::Create(torch::nn::Sequential layers,
                                                                std::vector<std::string> labels) {
  std::vector<Layer> trainable;
  size_t covered = 0;  // parameter tensors of the layers handled below
  for (size_t i = 0; i < layers->size(); ++i) {
    std::shared_ptr<torch::nn::Module> m = layers->ptr(i);
    const size_t params = m->parameters(/*recurse=*/true).size();
    if (params == 0) continue;
    const std::string label = i < labels.size() ? labels[i] : absl::StrCat("layer ", i, " (", m->name(), ")");
    std::optional<Kind> kind;
    if (m->as<torch::nn::Linear>() != nullptr) {
      kind = Kind::kLinear;
    } else if (const auto* conv = m->as<torch::nn::Conv2d>(); conv != nullptr && GeometryOf(*conv)) {
      kind = Kind::kConv2d;
    } else if (m->as<FloatIndexEmbedding>() != nullptr) {
      kind = Kind::kEmbedding;
    } else if (const auto* ln = m->as<torch::nn::LayerNorm>();
               ln != nullptr && ln->options.normalized_shape().size() == 1 && ln->options.elementwise_affine()) {
      kind = Kind::kLayerNorm;
    }
    if (!kind || !m->children().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": DP-SGD cannot compute per-example gradients for this layer; layers with parameters "
                              "must be linear, conv2d (no groups or dilation), embedding or layer_norm"));
    }
    trainable.push_back({i, *kind, std::move(m)});
    covered += params;
  }
  if (covered != layers->parameters(/*recurse=*/true).size()) {
    return absl::InvalidArgumentError("DP-SGD: the model holds parameters outside its layers");
  }
  return PerExampleGradients(std::move(layers), std::move(trainable));
}

PerExampleGradients::PerExampleGradients(torch::nn::Sequential layers, std::vector<Layer> trainable)
    : layers_(std::move(layers)), trainable_(std::move(trainable)) {}

void PerExampleGradients::Release() {
  records_.clear();
  batch_size_ = 0;
}

torch::Tensor PerExampleGradients::Backward(const torch::Tensor& x, const torch::Tensor& y) {
  Release();
  records_.resize(trainable_.size());
  std::vector<torch::Tensor> outputs;
  outputs.reserve(trainable_.size());
  torch::Tensor h = x;
  size_t index = 0, next = 0;
  for (torch::nn::AnyModule& layer : *layers_) {
    const bool keep = next < trainable_.size() && trainable_[next].index == index;
    if (keep) records_[next].input = h;
    h = layer.forward(h);
    if (keep) {
      outputs.push_back(h);
      ++next;
    }
    ++index;
  }
  // The loss in fp32 whatever precision the layers ran in (autocast may have made h bf16).
  const torch::Tensor losses =
      F::cross_entropy(h.to(torch::kFloat32), y, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  batch_size_ = x.size(0);
  if (outputs.empty()) return losses.detach();
  // The losses are summed, not averaged, so that row n of each output gradient is example
  // n's own gradient.
  std::vector<torch::Tensor> grads = torch::autograd::grad({losses.sum()}, outputs);
  torch::NoGradGuard no_grad;
  // Norms, clip factors and sums are computed in fp32 even when the forward pass ran under
  // autocast (bf16 activations and output gradients): clipping to C must hold to fp32
  // precision, and autocast would run the per-example convolution below in bf16 again.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  for (size_t k = 0; k < records_.size(); ++k) {
    records_[k].input = records_[k].input.detach().to(torch::kFloat32);
    records_[k].grad_output = grads[k].to(torch::kFloat32);
    if (trainable_[k].kind == Kind::kLayerNorm) LayerNormPerExample(trainable_[k], records_[k]);
    if (trainable_[k].kind == Kind::kConv2d) Conv2dPerExample(trainable_[k], records_[k]);
  }
  return losses.detach();
}

void PerExampleGradients::LayerNormPerExample(const Layer& layer, Record& r) const {
  const auto* ln = layer.module->as<torch::nn::LayerNorm>();
  const int64_t d = ln->options.normalized_shape()[0];
  const torch::Tensor xhat = F::layer_norm(r.input, F::LayerNormFuncOptions({d}).eps(ln->options.eps()));
  r.per_example_weight = (r.grad_output * xhat).reshape({batch_size_, -1, d}).sum(1);
  r.per_example_bias = r.grad_output.reshape({batch_size_, -1, d}).sum(1);
}

void PerExampleGradients::Conv2dPerExample(const Layer& layer, Record& r) const {
  // Example n's weight gradient correlates its input with its output gradient:
  //   dW_n[o, c, i, j] = sum_{y, x} g_n[o, y, x] a_n[c, s y + i - p, s x + j - p],
  // a convolution of the input, channels taken as the batch, with g_n as the kernel
  // (dilated by the stride), one group per example. Cropped to the kernel size: the
  // correlation runs past it when the stride does not divide the input.
  const auto* conv = layer.module->as<torch::nn::Conv2d>();
  const ConvGeometry geo = *GeometryOf(*conv);
  const torch::Tensor& a = r.input;
  const torch::Tensor& g = r.grad_output;
  const int64_t b = batch_size_, channels = a.size(1), out_channels = g.size(1);
  const torch::Tensor correlation =
      F::conv2d(a.transpose(0, 1), g.reshape({b * out_channels, 1, g.size(2), g.size(3)}),
                F::Conv2dFuncOptions().padding({geo.ph, geo.pw}).dilation({geo.sh, geo.sw}).groups(b));
  r.per_example_weight = correlation.slice(2, 0, geo.kh)
                             .slice(3, 0, geo.kw)
                             .reshape({channels, b, out_channels, geo.kh * geo.kw})
                             .permute({1, 2, 0, 3})
                             .reshape({b, -1});
  if (conv->bias.defined()) r.per_example_bias = g.sum({2, 3});
  // What the norms and sums need is formed; the activations can go.
  r.input = torch::Tensor();
  r.grad_output = torch::Tensor();
}

std::vector<torch::Tensor> PerExampleGradients::SquaredNormsPerParameter() const {
  torch::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // fp32, see Backward
  std::vector<torch::Tensor> out;
  const int64_t b = batch_size_;
  for (size_t k = 0; k < trainable_.size(); ++k) {
    const Layer& layer = trainable_[k];
    const Record& r = records_[k];
    const torch::Tensor& a = r.input;
    const torch::Tensor& g = r.grad_output;
    switch (layer.kind) {
      case Kind::kLinear: {
        const bool bias = layer.module->as<torch::nn::Linear>()->bias.defined();
        if (a.dim() == 2) {
          const torch::Tensor g2 = g.pow(2).sum(1);
          out.push_back(a.pow(2).sum(1) * g2);
          if (bias) out.push_back(g2);
        } else {
          // Positions share the weight: sum_t g_t a_t^T per example, formed per chunk.
          const torch::Tensor a3 = a.reshape({b, -1, a.size(-1)}), g3 = g.reshape({b, -1, g.size(-1)});
          torch::Tensor w2 = torch::empty({b}, a.options());
          const int64_t chunk = ChunkOf(a3.size(2) * g3.size(2));
          for (int64_t lo = 0; lo < b; lo += chunk) {
            const int64_t hi = std::min(b, lo + chunk);
            w2.slice(0, lo, hi).copy_(
                torch::bmm(g3.slice(0, lo, hi).transpose(1, 2), a3.slice(0, lo, hi)).pow(2).sum({1, 2}));
          }
          out.push_back(w2);
          if (bias) out.push_back(g3.sum(1).pow(2).sum(1));
        }
        break;
      }
      case Kind::kConv2d:
        out.push_back(r.per_example_weight.pow(2).sum(1));
        if (r.per_example_bias.defined()) out.push_back(r.per_example_bias.pow(2).sum(1));
        break;
      case Kind::kEmbedding: {
        const auto* emb = layer.module->as<FloatIndexEmbedding>();
        const torch::Tensor idx = emb->Indices(a).reshape({b, -1});
        const int64_t t = idx.size(1), d = emb->weight.size(1);
        const torch::Tensor g3 = g.reshape({b, t, d});
        const int64_t rows = emb->weight.size(0);
        torch::Tensor w2 = torch::empty({b}, g.options());
        // Whichever is smaller per example: the gradient itself (rows x d, scattered) or the
        // pairwise products of positions (t x t).
        const bool scatter = rows * d <= t * t;
        const int64_t chunk = ChunkOf(scatter ? rows * d : t * t);
        for (int64_t lo = 0; lo < b; lo += chunk) {
          const int64_t hi = std::min(b, lo + chunk);
          const torch::Tensor ic = idx.slice(0, lo, hi), gc = g3.slice(0, lo, hi);
          if (scatter) {
            const torch::Tensor row = (ic + torch::arange(hi - lo, ic.options()).unsqueeze(1) * rows).reshape({-1});
            const torch::Tensor per_example =
                torch::zeros({(hi - lo) * rows, d}, g.options()).index_add_(0, row, gc.reshape({-1, d}));
            w2.slice(0, lo, hi).copy_(per_example.reshape({hi - lo, -1}).pow(2).sum(1));
          } else {
            const torch::Tensor same = ic.unsqueeze(2).eq(ic.unsqueeze(1)).to(g.scalar_type());
            w2.slice(0, lo, hi).copy_((same * torch::bmm(gc, gc.transpose(1, 2))).sum({1, 2}));
          }
        }
        out.push_back(w2);
        break;
      }
      case Kind::kLayerNorm:
        out.push_back(r.per_example_weight.pow(2).sum(1));
        out.push_back(r.per_example_bias.pow(2).sum(1));
        break;
    }
  }
  return out;
}

torch::Tensor PerExampleGradients::SquaredNorms() const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> per_parameter = SquaredNormsPerParameter();
  if (per_parameter.empty()) return torch::zeros({batch_size_});
  torch::Tensor total = per_parameter[0].clone();
  for (size_t i = 1; i < per_parameter.size(); ++i) total += per_parameter[i];
  return total;
}

std::vector<torch::Tensor> PerExampleGradients::WeightedSum(const torch::Tensor& weights) const {
  torch::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // fp32, see Backward
  std::vector<torch::Tensor> out;
  const int64_t b = batch_size_;
  for (size_t k = 0; k < trainable_.size(); ++k) {
    const Layer& layer = trainable_[k];
    const Record& r = records_[k];
    const torch::Tensor& a = r.input;
    const torch::Tensor& g = r.grad_output;
    switch (layer.kind) {
      case Kind::kLinear: {
        const int64_t in = a.size(-1), out_features = g.size(-1);
        const torch::Tensor wg = (g.reshape({b, -1, out_features}) * weights.view({b, 1, 1})).reshape({-1, out_features});
        out.push_back(wg.t().mm(a.reshape({-1, in})));
        if (layer.module->as<torch::nn::Linear>()->bias.defined()) out.push_back(wg.sum(0));
        break;
      }
      case Kind::kConv2d: {
        const auto* conv = layer.module->as<torch::nn::Conv2d>();
        // A tensor of its own, not a view: optimizers detach gradients in place.
        out.push_back(r.per_example_weight.t().mv(weights).view(conv->weight.sizes()).clone());
        if (r.per_example_bias.defined()) out.push_back(r.per_example_bias.t().mv(weights));
        break;
      }
      case Kind::kEmbedding: {
        const auto* emb = layer.module->as<FloatIndexEmbedding>();
        const int64_t d = emb->weight.size(1);
        const torch::Tensor idx = emb->Indices(a).reshape({-1});
        const torch::Tensor wg = (g.reshape({b, -1, d}) * weights.view({b, 1, 1})).reshape({-1, d});
        out.push_back(torch::zeros_like(emb->weight).index_add_(0, idx, wg));
        break;
      }
      case Kind::kLayerNorm:
        out.push_back(r.per_example_weight.t().mv(weights));
        out.push_back(r.per_example_bias.t().mv(weights));
        break;
    }
  }
  return out;
}

}  // namespace cohort::training
