// training/evaluation.h: a model's loss and accuracy on a test set, without a copy of it
// (but for small convolution kernels, laid out channels-last).
#include "training/evaluation.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "training/lora.h"
#include "training/torch_model.h"
#include "training/train_step.h"

namespace cohort::training {

absl::StatusOr<core::EvalMetrics> Evaluate(const ModelSpec& spec, const core::ParameterSet& parameters,
                                           const Dataset& data, int64_t batch_size) {
  absl::StatusOr<std::unique_ptr<TestSetEvaluator>> evaluator = TestSetEvaluator::Create(spec, data, batch_size);
  if (!evaluator.ok()) return evaluator.status();
  return (*evaluator)->Evaluate(parameters);
}

struct TestSetEvaluator::Impl {
  Impl(const ModelSpec& spec, Dataset test, int64_t batch)
      : manifest(spec.ParameterManifest()), data(std::move(test)), batch_size(batch), net(spec) {}
  core::Manifest manifest;
  Dataset data;
  int64_t batch_size;
  CohortNet net;
};

namespace {

// Convolutions run faster channels-last with this LibTorch (oneDNN takes them), but only
// with the weights and the input both so: the README's CNN tests its 10,000 images in
// 0.20 s of one core instead of 0.28 (batches of 100). The weights are views of the model's
// bytes, so channels-last means a copy of them; taken only while the convolution weights
// are small beside any model worth streaming (the evaluation copies no other tensor).
constexpr int64_t kMaxChannelsLastCopyBytes = int64_t{16} << 20;

bool ConvolutionWeightsToChannelsLast(CohortNet& net) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> kernels;
  int64_t bytes = 0;
  for (torch::Tensor& p : net->parameters()) {
    if (p.dim() != 4) continue;
    kernels.push_back(p);
    bytes += p.numel() * static_cast<int64_t>(sizeof(float));
  }
  if (kernels.empty() || bytes > kMaxChannelsLastCopyBytes) return false;
  for (torch::Tensor& p : kernels) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  return true;
}

}  // namespace

TestSetEvaluator::TestSetEvaluator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TestSetEvaluator::~TestSetEvaluator() = default;

absl::StatusOr<std::unique_ptr<TestSetEvaluator>> TestSetEvaluator::Create(const ModelSpec& spec, Dataset test,
                                                                           int64_t batch_size) {
  if (absl::Status s = CheckData(spec, test, "evaluation"); !s.ok()) return s;
  if (absl::Status s = CheckLoraBaseLoaded(spec); !s.ok()) return s;
  try {
    const int64_t batch = EvalBatchSize(spec, test, batch_size);
    auto impl = std::make_unique<Impl>(spec, std::move(test), batch);
    UnbindParameters(impl->net);  // the module's own initial values are never used
    return std::unique_ptr<TestSetEvaluator>(new TestSetEvaluator(std::move(impl)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building the evaluation model failed: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<core::EvalMetrics> TestSetEvaluator::Evaluate(const core::ParameterSet& parameters) {
  try {
    if (absl::Status s = BindParameters(impl_->net, impl_->manifest, parameters); !s.ok()) return s;
    const bool channels_last = ConvolutionWeightsToChannelsLast(impl_->net);
    core::EvalMetrics metrics = EvaluateNet(impl_->net, impl_->data, impl_->batch_size, channels_last);
    UnbindParameters(impl_->net);
    return metrics;
  } catch (const c10::Error& e) {
    UnbindParameters(impl_->net);
    return absl::InternalError(absl::StrCat("evaluation failed: ", e.what_without_backtrace()));
  }
}

}  // namespace cohort::training
