#include "training/data_readers.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/limits.h"
#include "core/quote.h"
#include "training/text_data.h"

namespace cohort::training {
namespace {

// The whole decompressed contents of `path`, refused as soon as they pass
// core::kMaxDataFileBytes: a small gzip file can expand a thousandfold. zlib passes a
// file that is not gzip'd through unchanged; the IDX checks below then apply to it.
absl::StatusOr<std::string> ReadGzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path,
                                            " (install the dataset-fashion-mnist package or pass --data DIR)"));
  }
  std::string out;
  char buffer[1 << 16];
  int n;
  bool too_big = false;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) {
    if (out.size() + static_cast<size_t>(n) > core::kMaxDataFileBytes) {
      too_big = true;
      break;
    }
    out.append(buffer, static_cast<size_t>(n));
  }
  const bool failed = n < 0;
  gzclose(file);
  if (too_big) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": expected at most ", core::kMaxDataFileBytes,
                                                     " bytes once decompressed, it holds more; split the data set"));
  }
  if (failed) return absl::DataLossError(absl::StrCat(path, ": not a valid gzip file"));
  return out;
}

uint32_t BigEndian32(std::string_view data, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// One IDX array of unsigned bytes: its dimensions and its data, inside the file's bytes.
struct IdxArray {
  std::vector<uint64_t> dims;
  std::string_view data;
};

// Parses an IDX file of unsigned bytes with `num_dims` dimensions (magic 0x00 0x00 0x08
// num_dims, then each dimension as a big-endian u32, then the data). Every dimension
// must be at least 1, and their product must be exactly the bytes that follow: the
// product is built one factor at a time and compared with the file's size before the
// next, so it can neither overflow nor describe more than the file holds, and nothing
// is allocated from a dimension the file's size does not back. Errors name the file.
absl::StatusOr<IdxArray> ParseIdx(std::string_view bytes, uint32_t num_dims, const std::string& path,
                                  std::string_view what) {
  const uint32_t magic = 0x800 | num_dims;
  const size_t header_bytes = 4 + 4 * size_t{num_dims};
  if (bytes.size() < header_bytes || BigEndian32(bytes, 0) != magic) {
    return absl::DataLossError(absl::StrFormat("%s: not an IDX%u %s file (magic 0x%x and %u dimensions)", path,
                                               num_dims, what, magic, num_dims));
  }
  IdxArray out;
  out.data = bytes.substr(header_bytes);
  uint64_t product = 1;
  for (uint32_t i = 0; i < num_dims; ++i) {
    const uint64_t dim = BigEndian32(bytes, 4 + 4 * size_t{i});
    // product <= data size <= kMaxDataFileBytes < 2^33 and dim < 2^32: no overflow.
    if (dim == 0 || product * dim > out.data.size()) {
      return absl::DataLossError(absl::StrCat(
          path, ": IDX dimension ", i, " is ", dim, ", but the file holds ", out.data.size(),
          " bytes of data after its header; expected dimensions >= 1 whose product is the data size "
          "(the file is truncated or not an IDX file)"));
    }
    product *= dim;
    out.dims.push_back(dim);
  }
  if (product != out.data.size()) {
    return absl::DataLossError(absl::StrCat(path, ": IDX dimensions describe ", product, " bytes of data, the file holds ",
                                            out.data.size(), " (the file is truncated or has trailing bytes)"));
  }
  return out;
}

}  // namespace

absl::StatusOr<Dataset> ReadFashionMnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  const std::string images_path = absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz");
  const std::string labels_path = absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz");
  absl::StatusOr<std::string> images_file = ReadGzip(images_path);
  if (!images_file.ok()) return images_file.status();
  absl::StatusOr<std::string> labels_file = ReadGzip(labels_path);
  if (!labels_file.ok()) return labels_file.status();
  absl::StatusOr<IdxArray> images = ParseIdx(*images_file, 3, images_path, "image");
  if (!images.ok()) return images.status();
  absl::StatusOr<IdxArray> labels = ParseIdx(*labels_file, 1, labels_path, "label");
  if (!labels.ok()) return labels.status();
  const uint64_t count = images->dims[0], rows = images->dims[1], cols = images->dims[2];
  if (labels->dims[0] != count) {
    return absl::DataLossError(absl::StrCat(dir, ": image and label files disagree on size: ", images_path, " holds ",
                                            count, " images, ", labels_path, " holds ", labels->dims[0],
                                            " labels; use the files of one split"));
  }
  Dataset out;
  out.example_shape = {1, static_cast<int64_t>(rows), static_cast<int64_t>(cols)};
  out.num_classes = 10;
  out.labels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    out.labels[i] = static_cast<unsigned char>(labels->data[i]);
    if (out.labels[i] >= out.num_classes) {
      return absl::DataLossError(absl::StrCat(labels_path, ": label ", i, " is ", out.labels[i],
                                              ", expected 0 to ", out.num_classes - 1));
    }
  }
  out.features.resize(images->data.size());
  const auto* pixels = reinterpret_cast<const unsigned char*>(images->data.data());
  for (size_t i = 0; i < out.features.size(); ++i) out.features[i] = static_cast<float>(pixels[i]) / 255.0f;
  return out;
}

absl::StatusOr<Dataset> ReadCsv(const std::string& path, const std::string& label_column) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open CSV file ", path));
  // Refused by its size before it is read: one line of a file can be the whole file.
  std::error_code size_error;
  const uintmax_t file_bytes = std::filesystem::file_size(path, size_error);
  if (size_error) {
    return absl::InvalidArgumentError(
        absl::StrCat("CSV file ", path, ": cannot read its size (", size_error.message(), "); expected a regular file"));
  }
  if (file_bytes > core::kMaxDataFileBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("CSV file ", path, ": expected at most ", core::kMaxDataFileBytes,
                                                     " bytes, it holds ", file_bytes, "; split the data set"));
  }
  std::string line;
  if (!std::getline(in, line)) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
  std::vector<std::string> header;
  for (absl::string_view name : absl::StrSplit(absl::StripAsciiWhitespace(line), ',')) {
    header.emplace_back(absl::StripAsciiWhitespace(name));
  }
  auto label_it = std::find(header.begin(), header.end(), label_column);
  if (label_it == header.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no column named ", core::QuotePrefix(label_column), " (set data.label_column)"));
  }
  if (header.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the label column is the only column; expected at least one feature column"));
  }
  const size_t label_index = static_cast<size_t>(label_it - header.begin());
  std::vector<std::string> raw_labels;
  Dataset out;
  out.example_shape = {static_cast<int64_t>(header.size() - 1)};
  size_t line_number = 1;
  while (std::getline(in, line)) {
    ++line_number;
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (stripped.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(stripped, ',');
    if (fields.size() != header.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": expected ", header.size(),
                                                     " fields, got ", fields.size()));
    }
    for (size_t c = 0; c < fields.size(); ++c) {
      if (c == label_index) {
        raw_labels.emplace_back(absl::StripAsciiWhitespace(fields[c]));
        continue;
      }
      double v;
      // Features become float32: a value past its range would be undefined to convert, a
      // NaN or infinity would poison every gradient it touches.
      const bool number = absl::SimpleAtod(absl::StripAsciiWhitespace(fields[c]), &v);
      if (!number || !std::isfinite(v) || std::fabs(v) > std::numeric_limits<float>::max()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": column ", core::QuotePrefix(header[c]),
                                                       number ? " is not a finite float32 number: " : " is not a number: ",
                                                       core::QuotePrefix(std::string_view(fields[c].data(), fields[c].size()))));
      }
      out.features.push_back(static_cast<float>(v));
    }
  }
  if (raw_labels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no data rows after the header"));
  }
  // Integer labels keep their value; anything else maps to its rank among distinct labels.
  // Either way the classes are bounded: the model has an output per class.
  bool all_integers = true;
  std::vector<int64_t> integer_labels;
  integer_labels.reserve(raw_labels.size());
  for (const std::string& l : raw_labels) {
    int64_t v;
    if (!absl::SimpleAtoi(l, &v) || v < 0) {
      all_integers = false;
      break;
    }
    if (v >= core::kMaxDataClasses) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": label ", v, " in column ", core::QuotePrefix(label_column),
                                                     "; expected integer labels below ", core::kMaxDataClasses));
    }
    integer_labels.push_back(v);
  }
  if (all_integers) {
    out.labels = std::move(integer_labels);
    out.num_classes = *std::max_element(out.labels.begin(), out.labels.end()) + 1;
  } else {
    std::map<std::string, int64_t> ids;
    for (const std::string& l : raw_labels) ids.emplace(l, 0);
    if (ids.size() > static_cast<size_t>(core::kMaxDataClasses)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": column ", core::QuotePrefix(label_column), " holds ",
                                                     ids.size(), " distinct labels; expected at most ",
                                                     core::kMaxDataClasses));
    }
    int64_t next = 0;
    for (auto& [name, id] : ids) id = next++;
    for (const std::string& l : raw_labels) out.labels.push_back(ids[l]);
    out.num_classes = next;
  }
  return out;
}

absl::StatusOr<Dataset> ReadDataset(const std::string& dataset, const std::string& path, Split split,
                                    const std::string& label_column) {
  if (dataset == "fashion-mnist") return ReadFashionMnist(path, split);
  if (dataset == "csv") return ReadCsv(path, label_column);
  if (dataset == "text") {
    return absl::InvalidArgumentError(
        "data.dataset: \"text\" needs data.sequence_length and data.files; read it through the data section");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("data.dataset: expected \"fashion-mnist\", \"csv\" or \"text\", got \"", dataset, "\""));
}

absl::StatusOr<Dataset> ReadDataset(const core::DataConfig& data, const std::string& path, Split split) {
  if (data.dataset != "text") return ReadDataset(data.dataset, path, split, data.label_column);
  TextDataOptions options;
  options.path = path;
  options.files = data.files;
  options.sequence_length = data.sequence_length;
  return ReadTextWindows(options, split);
}

}  // namespace cohort::training
