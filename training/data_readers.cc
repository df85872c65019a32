#include "training/data_readers.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace cohort::training {
namespace {

absl::StatusOr<std::string> ReadGzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path,
                                            " (install the dataset-fashion-mnist package or pass --data DIR)"));
  }
  std::string out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
  const bool failed = n < 0;
  gzclose(file);
  if (failed) return absl::DataLossError(absl::StrCat(path, ": not a valid gzip file"));
  return out;
}

uint32_t BigEndian32(const std::string& data, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

absl::StatusOr<Dataset> ReadFashionMnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  const std::string images_path = absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz");
  const std::string labels_path = absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz");
  absl::StatusOr<std::string> images = ReadGzip(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadGzip(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->size() < 16 || BigEndian32(*images, 0) != 0x803) {
    return absl::DataLossError(absl::StrCat(images_path, ": not an IDX3 image file (magic 0x803)"));
  }
  if (labels->size() < 8 || BigEndian32(*labels, 0) != 0x801) {
    return absl::DataLossError(absl::StrCat(labels_path, ": not an IDX1 label file (magic 0x801)"));
  }
  const size_t count = BigEndian32(*images, 4), rows = BigEndian32(*images, 8), cols = BigEndian32(*images, 12);
  if (BigEndian32(*labels, 4) != count || images->size() != 16 + count * rows * cols ||
      labels->size() != 8 + count) {
    return absl::DataLossError(absl::StrCat(dir, ": image and label files disagree on size or are truncated"));
  }
  Dataset out;
  out.example_shape = {1, static_cast<int64_t>(rows), static_cast<int64_t>(cols)};
  out.num_classes = 10;
  out.features.resize(count * rows * cols);
  const auto* pixels = reinterpret_cast<const unsigned char*>(images->data() + 16);
  for (size_t i = 0; i < out.features.size(); ++i) out.features[i] = static_cast<float>(pixels[i]) / 255.0f;
  out.labels.resize(count);
  for (size_t i = 0; i < count; ++i) {
    out.labels[i] = static_cast<unsigned char>((*labels)[8 + i]);
    if (out.labels[i] >= 10) return absl::DataLossError(absl::StrCat(labels_path, ": label out of range"));
  }
  return out;
}

absl::StatusOr<Dataset> ReadCsv(const std::string& path, const std::string& label_column) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open CSV file ", path));
  std::string line;
  if (!std::getline(in, line)) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
  std::vector<std::string> header;
  for (absl::string_view name : absl::StrSplit(absl::StripAsciiWhitespace(line), ',')) {
    header.emplace_back(absl::StripAsciiWhitespace(name));
  }
  auto label_it = std::find(header.begin(), header.end(), label_column);
  if (label_it == header.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no column named \"", label_column, "\" (set data.label_column)"));
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
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(fields[c]), &v)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": column \"", header[c],
                                                       "\" is not a number: \"", fields[c], "\""));
      }
      out.features.push_back(static_cast<float>(v));
    }
  }
  // Integer labels keep their value; anything else maps to its rank among distinct labels.
  bool all_integers = true;
  int64_t max_label = -1;
  for (const std::string& l : raw_labels) {
    int64_t v;
    if (!absl::SimpleAtoi(l, &v) || v < 0) {
      all_integers = false;
      break;
    }
    max_label = std::max(max_label, v);
  }
  if (all_integers) {
    for (const std::string& l : raw_labels) out.labels.push_back(std::stoll(l));
    out.num_classes = max_label + 1;
  } else {
    std::map<std::string, int64_t> ids;
    for (const std::string& l : raw_labels) ids.emplace(l, 0);
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
  return absl::InvalidArgumentError(
      absl::StrCat("data.dataset: expected \"fashion-mnist\" or \"csv\", got \"", dataset, "\""));
}

}  // namespace cohort::training
