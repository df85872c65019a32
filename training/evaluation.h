#pragma once
// The loss and accuracy of a model on a test set: once (Evaluate), or model after model on
// the same set (TestSetEvaluator, the server's evaluation of each round's model). No
// LibTorch type crosses this header.

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "training/dataset.h"
#include "training/model_spec.h"

namespace cohort::training {

// Mean cross-entropy and accuracy of `parameters` on `data`: per example, or for a language
// model per token (next-token accuracy; perplexity is exp(loss)).
absl::StatusOr<core::EvalMetrics> Evaluate(const ModelSpec& spec, const core::ParameterSet& parameters,
                                           const Dataset& data, int64_t batch_size = 100);

// Evaluates model after model on one test set (the server's evaluation of each round's
// model): the module is built once, and each model is evaluated where it lies, the
// module's parameters viewing its bytes, so an evaluation adds no copy of the model to
// the process, but for convolution kernels of up to 16 MiB in all, copied channels-last
// (faster convolutions; evaluation.cc). One evaluation at a time (not thread-safe).
class TestSetEvaluator {
 public:
  // `spec` is what the job's models are laid out by (ModelSpec::ParameterManifest); the
  // test set must fit it (InvalidArgument naming what does not).
  static absl::StatusOr<std::unique_ptr<TestSetEvaluator>> Create(const ModelSpec& spec, Dataset test,
                                                                  int64_t batch_size);
  ~TestSetEvaluator();
  // Evaluate's metrics for `parameters`, which must stay unchanged during the call.
  absl::StatusOr<core::EvalMetrics> Evaluate(const core::ParameterSet& parameters);

 private:
  struct Impl;
  explicit TestSetEvaluator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::training
