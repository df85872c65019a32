#pragma once
// Internal to the training layer (includes LibTorch): what one training or evaluation step
// is made of, shared by the trainer's loops. The batch tensors of a Dataset, the task's
// loss (a class per example, or a next token per position for a language model), mixed
// precision (autocast, fp16 loss scaling), and the gradient sum of a worker group.

#include <algorithm>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "core/metrics.h"
#include "training/data_parallel.h"
#include "training/dataset.h"
#include "training/model_spec.h"
#include "training/torch_model.h"

namespace cohort::training {

// Views of a data set's rows ([N, example_shape]) and labels ([N, label_shape]); `data`
// must outlive them and stay unmoved.
torch::Tensor FeaturesOf(Dataset& data);
torch::Tensor LabelsOf(Dataset& data);

// OK when `data` fits `spec`: its example shape, its labels' shape (one per example, or one
// per position for a language model) and its classes. `which` names the data ("training").
absl::Status CheckData(const ModelSpec& spec, const Dataset& data, const char* which);

// Cross-entropy summed over every prediction of the batch: logits [B, C] against labels [B],
// or [B, T, V] against [B, T]. Divide by PredictionsIn(labels) for the mean.
torch::Tensor SummedCrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels,
                                 double label_smoothing = 0.0);
int64_t PredictionsIn(const torch::Tensor& labels);

// Mean cross-entropy and accuracy per prediction (per example, or per token), over `data`
// in batches of `batch_size`, in eval mode, on the device the model lives on, through
// CohortNet::InferenceForward (the same logits as forward, fewer passes over memory).
// With `channels_last`, 4-D inputs are laid out channels-last batch by batch (for a net whose
// convolution weights are already: TestSetEvaluator).
core::EvalMetrics EvaluateNet(CohortNet& net, Dataset& data, int64_t batch_size, bool channels_last = false);

// `requested` examples per evaluation batch, cut so that one batch's logits stay within 2^25
// floats (128 MiB): a language model's are [batch, T, vocab], and with the seeds' vocab of
// 50265 a batch of 1000 sequences of 64 would be 13 GB.
int64_t EvalBatchSize(const ModelSpec& spec, const Dataset& data, int64_t requested);

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);

// Autocast for the forward pass (and the loss) of one step: bf16 or fp16 compute, fp32
// weights. Scoped to a step because autocast caches the casts of weights, which change at
// every optimizer step; the cache is cleared when the scope closes.
class AutocastScope {
 public:
  AutocastScope(const torch::Device& device, const std::string& precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false, cuda_ = false, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

// fp16's dynamic loss scaling: the loss is multiplied by `scale` before backward so small
// gradients survive fp16; a step whose unscaled gradient is not finite is skipped and the
// scale halved; after 2000 good steps it doubles (PyTorch's GradScaler defaults).
class LossScaler {
 public:
  double scale() const { return scale_; }
  // Whether to take the step.
  bool Update(bool finite) {
    if (!finite) {
      scale_ = std::max(1.0, scale_ / 2);
      good_steps_ = 0;
      return false;
    }
    if (++good_steps_ == 2000) {
      scale_ *= 2;
      good_steps_ = 0;
    }
    return true;
  }

 private:
  double scale_ = 65536.0;
  int64_t good_steps_ = 0;
};

// A batch of host rows on the training device: through a pinned staging buffer and an
// asynchronous copy on CUDA, a plain gather on the CPU.
torch::Tensor ToDevice(const torch::Tensor& host, const torch::Tensor& rows, const torch::Device& device);

// Sums the gradients of `parameters` (and `extras`, statistics that travel with them) over
// the group, in one collective call on one flat buffer.
absl::Status AllReduceGradients(Collective& group, const std::vector<torch::Tensor>& parameters,
                                std::vector<double>& extras);

bool GradientsFinite(const std::vector<torch::Tensor>& parameters);

}  // namespace cohort::training
