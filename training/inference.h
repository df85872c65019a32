#pragma once
// A model's raw outputs for given inputs, for checks and tools that need more than the loss
// and accuracy of trainer.h's Evaluate: next-token logits of a language model, class
// scores of a classifier. No LibTorch type crosses this header.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"
#include "training/model_spec.h"

namespace cohort::training {

struct Outputs {
  std::vector<int64_t> shape;  // [N, T, vocab_size] for a decoder, [N, classes] otherwise
  std::vector<float> values;   // row-major
};

// The outputs of `spec` with `parameters` (eval mode: no dropout) on `inputs`, N examples of
// `example_shape` row-major (token ids as floats for a transformer). InvalidArgument when
// the shape does not fit the model or a token id is out of range.
absl::StatusOr<Outputs> ComputeOutputs(const ModelSpec& spec, const core::ParameterSet& parameters,
                                       const std::vector<float>& inputs, const std::vector<int64_t>& example_shape);

}  // namespace cohort::training
