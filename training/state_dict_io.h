#pragma once
// PyTorch state_dict files. WriteStateDict writes `model.pt` as a plain dict of tensors
// (pickle without TorchScript type tags, inside PyTorch's zip container), which Python's
// `torch.load` reads both with and without `weights_only=True`. ReadStateDict reads such
// a file, or one Python saved with `torch.save(dict(model.state_dict()), path)`.

#include <string>

#include "absl/status/statusor.h"
#include "core/parameter_set.h"

namespace cohort::training {

absl::Status WriteStateDict(const core::ParameterSet& parameters, const std::string& path);
absl::StatusOr<core::ParameterSet> ReadStateDict(const std::string& path);
// ReadStateDict of a file already read; `path` names it in errors.
absl::StatusOr<core::ParameterSet> ParseStateDict(const std::string& contents, const std::string& path);

// `loaded` (a state_dict as read, in the file's order) laid out as `layout`: every tensor
// of `layout` present once by name with its shape, nothing else, all finite. Errors start
// with `origin` (the file and what it is for) and end with `fix`.
absl::StatusOr<core::ParameterSet> ArrangeStateDict(const core::ParameterSet& loaded, const core::Manifest& layout,
                                                    const std::string& origin, const std::string& fix);

}  // namespace cohort::training
