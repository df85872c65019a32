#pragma once
// In-memory labelled examples, independent of LibTorch: the data readers produce this,
// the partitioners split it, and the trainer turns it into tensors.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cohort::training {

struct Dataset {
  std::vector<int64_t> example_shape;  // e.g. {1, 28, 28}; {F} for tabular rows
  std::vector<float> features;         // size() * example_size(), row-major
  std::vector<int64_t> labels;         // in [0, num_classes)
  int64_t num_classes = 0;

  size_t size() const { return labels.size(); }
  size_t example_size() const {
    size_t n = 1;
    for (int64_t d : example_shape) n *= static_cast<size_t>(d);
    return n;
  }
  // The examples at `indices`, in that order.
  Dataset Subset(const std::vector<size_t>& indices) const;
  // The first `count` examples (all when count is 0 or larger than the set).
  Dataset Head(size_t count) const;
};

}  // namespace cohort::training
