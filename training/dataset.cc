#include "training/dataset.h"

#include <algorithm>
#include <numeric>

namespace cohort::training {

Dataset Dataset::Subset(const std::vector<size_t>& indices) const {
  Dataset out;
  out.example_shape = example_shape;
  out.num_classes = num_classes;
  const size_t width = example_size();
  out.features.resize(indices.size() * width);
  out.labels.reserve(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    std::copy_n(features.begin() + static_cast<std::ptrdiff_t>(indices[i] * width), width,
                out.features.begin() + static_cast<std::ptrdiff_t>(i * width));
    out.labels.push_back(labels[indices[i]]);
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
