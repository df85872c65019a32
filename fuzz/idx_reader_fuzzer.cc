// Fuzzes the IDX reader (training::ReadFashionMnist) with an image file and a label file
// written from the input:
//   byte 0        flags: bit 0 gzips the image file, bit 1 the label file (zlib reads a
//                 file that is not gzip'd as it is, so unset bits fuzz the IDX bytes
//                 directly), bit 2 reads the test split instead of the training split
//   bytes 1-4     little-endian length N of the image file (cut to what is there)
//   then          N bytes of image file, and the rest is the label file.
//
// Properties beyond "no crash, leak or hang": a data set that reads has one label per
// example, features of exactly examples x 1 x rows x cols values in [0, 1], and labels in
// [0, 10).

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_scratch.h"
#include "training/data_readers.h"

namespace {

using namespace cohort;

void WriteMaybeGzipped(const std::filesystem::path& path, std::string_view bytes, bool gzip) {
  if (!gzip) {
    fuzz::WriteWholeFile(path, bytes);
    return;
  }
  gzFile file = gzopen(path.c_str(), "wb1");
  if (file == nullptr || (!bytes.empty() && gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) <= 0) ||
      gzclose(file) != Z_OK) {
    fuzz::PropertyFailed("harness: cannot write a gzip file");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const uint8_t flags = data[0];
  const size_t image_bytes = std::min<size_t>(
      size - 5, uint32_t{data[1]} | uint32_t{data[2]} << 8 | uint32_t{data[3]} << 16 | uint32_t{data[4]} << 24);
  const std::string_view rest = fuzz::AsText(data + 5, size - 5);
  const training::Split split = (flags & 4) ? training::Split::kTest : training::Split::kTrain;
  const std::string prefix = split == training::Split::kTrain ? "train" : "t10k";
  const std::filesystem::path& dir = fuzz::ScratchDir();
  WriteMaybeGzipped(dir / (prefix + "-images-idx3-ubyte.gz"), rest.substr(0, image_bytes), flags & 1);
  WriteMaybeGzipped(dir / (prefix + "-labels-idx1-ubyte.gz"), rest.substr(image_bytes), flags & 2);

  absl::StatusOr<training::Dataset> read = training::ReadFashionMnist(dir.string(), split);
  if (!read.ok()) return 0;
  const training::Dataset& d = *read;
  if (d.example_shape.size() != 3 || d.example_shape[0] != 1 || d.example_shape[1] < 1 || d.example_shape[2] < 1 ||
      d.size() == 0 || d.features.size() != d.size() * d.example_size() || d.num_classes != 10) {
    fuzz::PropertyFailed(absl::StrCat("inconsistent data set: ", d.size(), " labels, ", d.features.size(),
                                      " features, example size ", d.example_size()));
  }
  for (float f : d.features) {
    if (!(f >= 0.0f && f <= 1.0f)) fuzz::PropertyFailed("a pixel outside [0, 1]");
  }
  for (int64_t label : d.labels) {
    if (label < 0 || label >= d.num_classes) fuzz::PropertyFailed("a label outside [0, num_classes)");
  }
  return 0;
}
