#pragma once
// In-memory labelled examples, independent of LibTorch: the data readers produce this,
// the partitioners split it, and the trainer turns it into tensors.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cohort::training {

struct Dataset {
  std::vector<int64_t> example_shape;  // e.g. {1, 28, 28}; {F} for tabular rows
  std::vector<float> features;         // size() * example_size(), row-major
  std::vector<int64_t> labels;         // size() * label_size(), in [0, num_classes)
  int64_t num_classes = 0;
  // Labels per example: empty for one label (a class), {T} for a label per position (the
  // next token of each input position in a language-model data set).
  std::vector<int64_t> label_shape;
  // Optional, one per example: the index in group_names of the source it came from (the
  // text file of a text data set); partition "by_file" gives each site whole groups.
  std::vector<int64_t> groups;
  std::vector<std::string> group_names;

  size_t label_size() const {
    size_t n = 1;
    for (int64_t d : label_shape) n *= static_cast<size_t>(d);
    return n;
  }
  size_t size() const { return labels.size() / label_size(); }
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
