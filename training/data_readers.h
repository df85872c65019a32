#pragma once
// Readers for the data sets a site trains on.

#include <string>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "training/dataset.h"

namespace cohort::training {

enum class Split { kTrain, kTest };

// Fashion-MNIST (or MNIST) from the gzip'd IDX files in `dir`
// ({train,t10k}-{images-idx3,labels-idx1}-ubyte.gz). Pixels scaled to [0, 1], shape 1x28x28.
absl::StatusOr<Dataset> ReadFashionMnist(const std::string& dir, Split split);

// A CSV file with a header row; every column but `label_column` is a numeric feature.
// Labels may be integers or strings (mapped to 0..K-1 in sorted order).
absl::StatusOr<Dataset> ReadCsv(const std::string& path, const std::string& label_column);

// A job's data section ("fashion-mnist" | "csv" | "text"; training/text_data.h for text,
// whose kTest split is the held-out last windows of each file) at `path`.
absl::StatusOr<Dataset> ReadDataset(const core::DataConfig& data, const std::string& path, Split split);

// Dispatch on a dataset name ("fashion-mnist" | "csv") as job configs name them.
absl::StatusOr<Dataset> ReadDataset(const std::string& dataset, const std::string& path, Split split,
                                    const std::string& label_column = "label");

}  // namespace cohort::training
