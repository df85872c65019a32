#include "training/dataset.h"

#include <algorithm>
#include <numeric>

namespace cohort::training {

Dataset Dataset::Subset(const std::vector<size_t>& indices) const {
  Dataset out;
  out.example_shape = example_shape;
  out.num_classes = num_classes;
  out.label_shape = label_shape;
  out.group_names = group_names;
  const size_t width = example_size(), label_width = label_size();
  out.features.resize(indices.size() * width);
  out.labels.resize(indices.size() * label_width);
  for (size_t i = 0; i < indices.size(); ++i) {
    std::copy_n(features.begin() + static_cast<std::ptrdiff_t>(indices[i] * width), width,
                out.features.begin() + static_cast<std::ptrdiff_t>(i * width));
    std::copy_n(labels.begin() + static_cast<std::ptrdiff_t>(indices[i] * label_width), label_width,
                out.labels.begin() + static_cast<std::ptrdiff_t>(i * label_width));
    if (!groups.empty()) out.groups.push_back(groups[indices[i]]);
  }
  return out;
}

Dataset Dataset::Head(size_t count) const {
  if (count == 0 || count >= size()) return *this;
  std::vector<size_t> indices(count);
  std::iota(indices.begin(), indices.end(), 0);
  return Subset(indices);
}

}  // namespace cohort::training
