// Fuzzes the CSV reader (training::ReadCsv) with the file written from the input, label
// column "label".
//
// Properties beyond "no crash, leak or hang": a data set that reads has at least one row
// and one feature column, exactly rows x features finite values, labels in
// [0, num_classes), and at most core::kMaxDataClasses classes.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/limits.h"
#include "fuzz/fuzz_scratch.h"
#include "training/data_readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cohort;
  const std::filesystem::path path = fuzz::ScratchDir() / "data.csv";
  fuzz::WriteWholeFile(path, fuzz::AsText(data, size));
  absl::StatusOr<training::Dataset> read = training::ReadCsv(path.string(), "label");
  if (!read.ok()) return 0;
  const training::Dataset& d = *read;
  if (d.example_shape.size() != 1 || d.example_shape[0] < 1 || d.size() == 0 ||
      d.features.size() != d.size() * d.example_size() || d.num_classes < 1 ||
      d.num_classes > core::kMaxDataClasses) {
    fuzz::PropertyFailed(absl::StrCat("inconsistent data set: ", d.size(), " rows, ", d.features.size(),
                                      " features, ", d.num_classes, " classes"));
  }
  for (float f : d.features) {
    if (!std::isfinite(f)) fuzz::PropertyFailed("a feature that is not finite");
  }
  for (int64_t label : d.labels) {
    if (label < 0 || label >= d.num_classes) fuzz::PropertyFailed("a label outside [0, num_classes)");
  }
  return 0;
}
