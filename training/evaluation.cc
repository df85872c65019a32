// training/evaluation.h: a model's loss and accuracy on a test set, without a copy of it.
#include "training/evaluation.h"

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
    core::EvalMetrics metrics = EvaluateNet(impl_->net, impl_->data, impl_->batch_size);
    UnbindParameters(impl_->net);
    return metrics;
  } catch (const c10::Error& e) {
    UnbindParameters(impl_->net);
    return absl::InternalError(absl::StrCat("evaluation failed: ", e.what_without_backtrace()));
  }
}

}  // namespace cohort::training
