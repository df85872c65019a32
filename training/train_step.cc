#include "training/train_step.h"

#include <algorithm>

#include <ATen/autocast_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cohort::training {

torch::Tensor FeaturesOf(Dataset& data) {
  std::vector<int64_t> shape = {static_cast<int64_t>(data.size())};
  shape.insert(shape.end(), data.example_shape.begin(), data.example_shape.end());
  return torch::from_blob(data.features.data(), shape, torch::kFloat32);
}

torch::Tensor LabelsOf(Dataset& data) {
  std::vector<int64_t> shape = {static_cast<int64_t>(data.size())};
  shape.insert(shape.end(), data.label_shape.begin(), data.label_shape.end());
  return torch::from_blob(data.labels.data(), shape, torch::kInt64);
}

absl::Status CheckData(const ModelSpec& spec, const Dataset& data, const char* which) {
  if (absl::Status s = spec.CheckExampleShape(data.example_shape, which); !s.ok()) return s;
  if (spec.predicts_every_position()) {
    if (data.label_shape != data.example_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          which, " data has one label per example, but a decoder transformer predicts the next token at every "
          "position; use \"dataset\": \"text\" (or \"architecture\": \"encoder\" to classify sequences)"));
    }
    if (data.num_classes > spec.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(which, " data uses ", data.num_classes,
                                                     " token ids but model_config.vocab_size is ", spec.num_classes,
                                                     "; set vocab_size >= ", data.num_classes));
    }
    return absl::OkStatus();
  }
  if (!data.label_shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        which, " data has a label per position [", absl::StrJoin(data.label_shape, ", "),
        "] (text for a language model), but this model outputs one class per example; use a decoder transformer"));
  }
  if (data.num_classes > spec.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(which, " data has ", data.num_classes,
                                                   " classes but the model outputs ", spec.num_classes));
  }
  return absl::OkStatus();
}

torch::Tensor SummedCrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing) {
  const torch::Tensor flat = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32);
  return torch::nn::functional::cross_entropy(
      flat, labels.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum).label_smoothing(label_smoothing));
}

int64_t PredictionsIn(const torch::Tensor& labels) { return labels.numel(); }

core::EvalMetrics EvaluateNet(CohortNet& net, Dataset& data, int64_t batch_size, bool channels_last) {
  c10::InferenceMode inference;  // no autograd bookkeeping at all, cheaper than NoGradGuard
  net->eval();
  const torch::Tensor x = FeaturesOf(data), y = LabelsOf(data);
  const int64_t n = static_cast<int64_t>(data.size());
  const std::vector<torch::Tensor> parameters = net->parameters();
  const torch::Device device = parameters.empty() ? torch::Device(torch::kCPU) : parameters[0].device();
  double loss_sum = 0;
  int64_t correct = 0, predictions = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(n, begin + batch_size);
    torch::Tensor batch = x.slice(0, begin, end).to(device);
    if (channels_last && batch.dim() == 4) batch = batch.contiguous(torch::MemoryFormat::ChannelsLast);
    const torch::Tensor logits = net->InferenceForward(batch);
    const torch::Tensor target = y.slice(0, begin, end).to(device);
    loss_sum += SummedCrossEntropy(logits, target).item<double>();
    correct += logits.argmax(-1).eq(target).sum().item<int64_t>();
    predictions += PredictionsIn(target);
  }
  core::EvalMetrics m;
  m.samples = static_cast<uint64_t>(n);
  if (predictions > 0) {
    m.loss = loss_sum / static_cast<double>(predictions);
    m.accuracy = static_cast<double>(correct) / static_cast<double>(predictions);
  }
  return m;
}

int64_t EvalBatchSize(const ModelSpec& spec, const Dataset& data, int64_t requested) {
  constexpr int64_t kMaxLogitsPerBatch = int64_t{1} << 25;
  const int64_t per_example = std::max<int64_t>(1, spec.num_classes * static_cast<int64_t>(data.label_size()));
  return std::clamp<int64_t>(kMaxLogitsPerBatch / per_example, 1, std::max<int64_t>(1, requested));
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

AutocastScope::AutocastScope(const torch::Device& device, const std::string& precision) {
  if (precision == "fp32") return;
  active_ = true;
  cuda_ = device.is_cuda();
  const at::ScalarType dtype = precision == "fp16" ? at::kHalf : at::kBFloat16;
  if (cuda_) {
    was_enabled_ = at::autocast::is_enabled();
    was_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
  } else {
    was_enabled_ = at::autocast::is_cpu_enabled();
    was_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}
AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(was_enabled_);
    at::autocast::set_autocast_gpu_dtype(was_dtype_);
  } else {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
  }
}

torch::Tensor ToDevice(const torch::Tensor& host, const torch::Tensor& rows, const torch::Device& device) {
  if (device.is_cpu()) return host.index_select(0, rows);
  std::vector<int64_t> shape = host.sizes().vec();
  shape[0] = rows.size(0);
  torch::Tensor staged = torch::empty(shape, host.options().pinned_memory(true));
  torch::index_select_out(staged, host, 0, rows);
  return staged.to(device, /*non_blocking=*/true);
}

absl::Status AllReduceGradients(Collective& group, const std::vector<torch::Tensor>& parameters,
                                std::vector<double>& extras) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> pieces;
  const torch::Device device = parameters.empty() ? torch::Device(torch::kCPU) : parameters[0].device();
  for (const torch::Tensor& p : parameters) {
    pieces.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
  }
  std::vector<float> extra_floats(extras.begin(), extras.end());
  pieces.push_back(torch::from_blob(extra_floats.data(), {static_cast<int64_t>(extra_floats.size())}, torch::kFloat32)
                       .to(device));
  const torch::Device reduce_on = group.device_memory() ? device : torch::Device(torch::kCPU);
  torch::Tensor flat = torch::cat(pieces).to(reduce_on).contiguous();
  if (absl::Status s = group.AllReduceSum(std::span<float>(flat.data_ptr<float>(), static_cast<size_t>(flat.numel())));
      !s.ok()) {
    return s;
  }
  flat = flat.to(device);
  int64_t offset = 0;
  for (const torch::Tensor& p : parameters) {
    const torch::Tensor summed = flat.slice(0, offset, offset + p.numel()).view(p.sizes());
    if (p.grad().defined()) {
      p.mutable_grad().copy_(summed);
    } else {
      p.mutable_grad() = summed.clone();
    }
    offset += p.numel();
  }
  const torch::Tensor tail = flat.slice(0, offset).to(torch::kCPU);
  for (size_t i = 0; i < extras.size(); ++i) extras[i] = tail[static_cast<int64_t>(i)].item<double>();
  return absl::OkStatus();
}

bool GradientsFinite(const std::vector<torch::Tensor>& parameters) {
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& p : parameters) {
    if (p.grad().defined() && !torch::isfinite(p.grad()).all().item<bool>()) return false;
  }
  return true;
}

}  // namespace cohort::training
