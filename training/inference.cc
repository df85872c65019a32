#include "training/inference.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "training/torch_model.h"

namespace cohort::training {

absl::StatusOr<Outputs> ComputeOutputs(const ModelSpec& spec, const core::ParameterSet& parameters,
                                       const std::vector<float>& inputs, const std::vector<int64_t>& example_shape) {
  if (absl::Status s = spec.CheckExampleShape(example_shape, "input"); !s.ok()) return s;
  int64_t width = 1;
  for (int64_t d : example_shape) width *= d;
  if (width == 0 || inputs.size() % static_cast<size_t>(width) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("inputs: ", inputs.size(), " values are not a whole number of ",
                                                   "examples of ", width, " values"));
  }
  std::vector<int64_t> shape = {static_cast<int64_t>(inputs.size()) / width};
  shape.insert(shape.end(), example_shape.begin(), example_shape.end());
  try {
    torch::NoGradGuard no_grad;
    CohortNet net(spec);
    if (absl::Status s = LoadParameters(net, parameters); !s.ok()) return s;
    net->eval();
    const torch::Tensor x = torch::from_blob(const_cast<float*>(inputs.data()), shape, torch::kFloat32);
    const torch::Tensor y = net->forward(x).to(torch::kFloat32).contiguous();
    Outputs out;
    out.shape = y.sizes().vec();
    out.values.resize(static_cast<size_t>(y.numel()));
    std::memcpy(out.values.data(), y.data_ptr<float>(), out.values.size() * sizeof(float));
    return out;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("computing outputs failed: ", e.what_without_backtrace()));
  }
}

}  // namespace cohort::training
