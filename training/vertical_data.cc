#include "training/vertical_data.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/config_reader.h"
#include "core/quote.h"
#include "training/data_readers.h"

namespace cohort::training {
namespace {

constexpr char kSection[] = "data";
// Bounds on what a data spec may list: a real table has far fewer columns, and a name
// longer than this is not a column name.
constexpr size_t kMaxFeatureColumns = 100'000;
constexpr size_t kMaxColumnNameBytes = 1024;
constexpr int64_t kMaxLabel = 1 << 20;
constexpr int64_t kFashionMnistWidth = 28;

// A value below `bound` from `rng`, without the modulo bias (rejects the top partial range),
// so a permutation depends only on the generator's output, never on a standard library's
// distribution code.
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t draw;
  do {
    draw = rng();
  } while (draw >= limit);
  return draw % bound;
}

// SplitMix64's finalizer: unrelated generator seeds for nearby (seed, stream) pairs.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Fisher-Yates over [0, n), from the last position down.
std::vector<size_t> SeededPermutation(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(seed);
  for (size_t i = n; i > 1; --i) {
    const size_t j = static_cast<size_t>(UniformBelow(rng, i));
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

// Distinct streams for the three uses of a seed, so that an epoch order never repeats the
// train/eval split or a keep_fraction choice made with the same number.
constexpr uint64_t kEpochStream = 0x65706f6368ULL;   // "epoch"
constexpr uint64_t kSplitStream = 0x73706c6974ULL;   // "split"
constexpr uint64_t kKeepStream = 0x6b656570ULL;      // "keep"

std::string Quoted(std::string_view value) { return core::QuotePrefix(value); }

absl::Status ReadFeatureColumns(const nlohmann::json& json, std::vector<std::string>* out) {
  if (!json.contains("feature_columns")) return absl::OkStatus();
  const nlohmann::json& list = json["feature_columns"];
  const std::string key = absl::StrCat(kSection, ".feature_columns");
  if (!list.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": expected a list of column names, got ", core::JsonPrefix(list)));
  }
  if (list.size() > kMaxFeatureColumns) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": expected at most ", kMaxFeatureColumns, " columns, got ", list.size()));
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& name = list[i];
    if (!name.is_string() || name.get_ref<const std::string&>().empty() ||
        name.get_ref<const std::string&>().size() > kMaxColumnNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat(key, "[", i, "]: expected a column name of 1-", kMaxColumnNameBytes,
                                                     " bytes, got ", core::JsonPrefix(name)));
    }
    const std::string& s = name.get_ref<const std::string&>();
    if (std::find(names.begin(), names.end(), s) != names.end()) {
      return absl::InvalidArgumentError(absl::StrCat(key, "[", i, "]: column ", Quoted(s), " is listed twice"));
    }
    names.push_back(s);
  }
  *out = std::move(names);
  return absl::OkStatus();
}

std::vector<std::string> SplitCsvLine(absl::string_view line) {
  std::vector<std::string> fields;
  for (absl::string_view field : absl::StrSplit(absl::StripAsciiWhitespace(line), ',')) {
    fields.emplace_back(absl::StripAsciiWhitespace(field));
  }
  return fields;
}

absl::StatusOr<VerticalTable> ReadCsvTable(const VerticalDataSpec& spec) {
  const std::string& path = spec.path;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open CSV file ", path, " (set data.path)"));
  std::string line;
  if (!std::getline(in, line)) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, expected a header line"));
  const std::vector<std::string> header = SplitCsvLine(line);
  auto column_of = [&](const std::string& name) -> int64_t {
    auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : static_cast<int64_t>(it - header.begin());
  };
  auto missing = [&](const std::string& name, const char* key) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":1: no column named ", Quoted(name), " (set data.", key,
                                                   "; the header has ", header.size(), " columns, starting ",
                                                   Quoted(absl::StrJoin(header, ",")), ")"));
  };
  const int64_t id_index = column_of(spec.id_column);
  if (id_index < 0) return missing(spec.id_column, "id_column");
  int64_t label_index = -1;
  if (!spec.label_column.empty()) {
    label_index = column_of(spec.label_column);
    if (label_index < 0) return missing(spec.label_column, "label_column");
    if (label_index == id_index) {
      return absl::InvalidArgumentError(absl::StrCat("data.label_column: ", Quoted(spec.label_column),
                                                     " is also the identifier column"));
    }
  }
  std::vector<size_t> feature_indices;
  if (spec.feature_columns.empty()) {
    for (size_t c = 0; c < header.size(); ++c) {
      if (static_cast<int64_t>(c) != id_index && static_cast<int64_t>(c) != label_index) feature_indices.push_back(c);
    }
  } else {
    for (const std::string& name : spec.feature_columns) {
      const int64_t c = column_of(name);
      if (c < 0) return missing(name, "feature_columns");
      if (c == id_index || c == label_index) {
        return absl::InvalidArgumentError(absl::StrCat("data.feature_columns: ", Quoted(name),
                                                       " is the identifier or label column"));
      }
      feature_indices.push_back(static_cast<size_t>(c));
    }
  }
  if (feature_indices.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no feature columns besides the identifier and label"));
  }

  VerticalTable table;
  table.feature_shape = {static_cast<int64_t>(feature_indices.size())};
  std::unordered_map<std::string, size_t> line_of_id;  // identifier -> line number
  size_t line_number = 1;
  int64_t max_label = -1;
  while (std::getline(in, line)) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::vector<std::string> fields = SplitCsvLine(line);
    const std::string where = absl::StrCat(path, ":", line_number);
    if (fields.size() != header.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected ", header.size(), " fields like the header, got ", fields.size()));
    }
    const std::string& id = fields[static_cast<size_t>(id_index)];
    if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty identifier in column ", Quoted(spec.id_column)));
    const auto [it, inserted] = line_of_id.emplace(id, line_number);
    if (!inserted) {
      return absl::FailedPreconditionError(absl::StrCat(path, ": identifier ", Quoted(id), " appears on lines ",
                                                        it->second, " and ", line_number,
                                                        "; identifiers must be unique"));
    }
    table.identifiers.push_back(id);
    for (size_t c : feature_indices) {
      double v;
      if (!absl::SimpleAtod(fields[c], &v) || !std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": column ", Quoted(header[c]),
                                                       " is not a finite number: ", Quoted(fields[c])));
      }
      table.features.push_back(static_cast<float>(v));
    }
    if (label_index >= 0) {
      const std::string& text = fields[static_cast<size_t>(label_index)];
      int64_t label;
      if (!absl::SimpleAtoi(text, &label) || label < 0 || label >= kMaxLabel) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": label column ", Quoted(spec.label_column),
                                                       " must hold an integer in [0, ", kMaxLabel, "), got ",
                                                       Quoted(text)));
      }
      table.labels.push_back(label);
      max_label = std::max(max_label, label);
    }
  }
  if (label_index >= 0) table.num_classes = std::max<int64_t>(2, max_label + 1);
  return table;
}

absl::StatusOr<VerticalTable> ReadFashionMnistTable(const VerticalDataSpec& spec) {
  if (spec.column_begin < 0 || spec.column_end > kFashionMnistWidth || spec.column_begin >= spec.column_end) {
    return absl::InvalidArgumentError(absl::StrCat("data.column_begin, data.column_end: expected 0 <= begin < end <= ",
                                                   kFashionMnistWidth, ", got [", spec.column_begin, ", ",
                                                   spec.column_end, ")"));
  }
  std::vector<std::pair<Split, const char*>> parts;
  if (spec.split == "train" || spec.split == "all") parts.emplace_back(Split::kTrain, "train");
  if (spec.split == "test" || spec.split == "all") parts.emplace_back(Split::kTest, "test");
  if (parts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("data.split: expected \"train\", \"test\" or \"all\", got ", Quoted(spec.split)));
  }
  const int64_t width = spec.column_end - spec.column_begin;
  VerticalTable table;
  table.feature_shape = {1, kFashionMnistWidth, width};
  const bool with_labels = !spec.label_column.empty();
  if (with_labels) table.num_classes = 10;
  for (const auto& [split, name] : parts) {
    absl::StatusOr<Dataset> data = ReadFashionMnist(spec.path, split);
    if (!data.ok()) return data.status();
    if (data->example_shape != std::vector<int64_t>{1, kFashionMnistWidth, kFashionMnistWidth}) {
      return absl::DataLossError(absl::StrCat(spec.path, ": expected 28x28 images"));
    }
    const size_t image = static_cast<size_t>(kFashionMnistWidth * kFashionMnistWidth);
    table.features.reserve(table.features.size() + data->size() * static_cast<size_t>(kFashionMnistWidth * width));
    for (size_t i = 0; i < data->size(); ++i) {
      table.identifiers.push_back(absl::StrCat("fmnist-", name, "-", i));
      const float* pixels = data->features.data() + i * image;
      for (int64_t r = 0; r < kFashionMnistWidth; ++r) {
        const float* row = pixels + r * kFashionMnistWidth;
        table.features.insert(table.features.end(), row + spec.column_begin, row + spec.column_end);
      }
      if (with_labels) table.labels.push_back(data->labels[i]);
    }
  }
  return table;
}

}  // namespace

absl::StatusOr<VerticalDataSpec> ParseVerticalDataSpec(const nlohmann::json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(kSection, ": expected an object like {\"dataset\": \"csv\", \"path\": ...}, got ",
                                                   core::JsonPrefix(json)));
  }
  VerticalDataSpec spec;
  core::ConfigReader reader(kSection, json);
  reader.String("dataset", &spec.dataset, {"csv", "fashion-mnist"});
  reader.String("path", &spec.path);
  reader.String("id_column", &spec.id_column);
  reader.Known("feature_columns");
  reader.String("label_column", &spec.label_column);
  reader.Integer("column_begin", &spec.column_begin, 0, kFashionMnistWidth - 1);
  reader.Integer("column_end", &spec.column_end, 1, kFashionMnistWidth);
  reader.String("split", &spec.split, {"train", "test", "all"});
  reader.Number("keep_fraction", &spec.keep_fraction, 0.0, 1.0, /*min_exclusive=*/true);
  reader.Unsigned("keep_seed", &spec.keep_seed);
  reader.Integer("max_rows", &spec.max_rows, 0, std::numeric_limits<int64_t>::max());
  if (absl::Status s = reader.Finish(); !s.ok()) return s;
  if (absl::Status s = ReadFeatureColumns(json, &spec.feature_columns); !s.ok()) return s;
  if (spec.path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kSection, ".path: expected the data file (csv) or directory (fashion-mnist)"));
  }
  if (spec.dataset == "csv" && spec.id_column.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kSection, ".id_column: expected the name of the identifier column"));
  }
  if (spec.column_begin >= spec.column_end) {
    return absl::InvalidArgumentError(absl::StrCat(kSection, ".column_begin: expected less than column_end (",
                                                   spec.column_end, "), got ", spec.column_begin));
  }
  if (spec.dataset == "fashion-mnist" && !spec.label_column.empty() && spec.label_column != "label") {
    return absl::InvalidArgumentError(absl::StrCat(kSection, ".label_column: fashion-mnist has one label column, \"label\"; got ",
                                                   Quoted(spec.label_column)));
  }
  return spec;
}

nlohmann::json VerticalDataSpecToJson(const VerticalDataSpec& spec) {
  return nlohmann::json{{"dataset", spec.dataset},           {"path", spec.path},
                        {"id_column", spec.id_column},       {"feature_columns", spec.feature_columns},
                        {"label_column", spec.label_column}, {"column_begin", spec.column_begin},
                        {"column_end", spec.column_end},     {"split", spec.split},
                        {"keep_fraction", spec.keep_fraction}, {"keep_seed", spec.keep_seed},
                        {"max_rows", spec.max_rows}};
}

size_t VerticalTable::feature_size() const {
  size_t n = 1;
  for (int64_t d : feature_shape) n *= static_cast<size_t>(d);
  return n;
}

VerticalTable VerticalTable::Rows(const std::vector<size_t>& indices) const {
  VerticalTable out;
  out.feature_shape = feature_shape;
  out.num_classes = num_classes;
  const size_t width = feature_size();
  out.identifiers.reserve(indices.size());
  out.features.reserve(indices.size() * width);
  for (size_t i : indices) {
    out.identifiers.push_back(identifiers[i]);
    out.features.insert(out.features.end(), features.begin() + static_cast<std::ptrdiff_t>(i * width),
                        features.begin() + static_cast<std::ptrdiff_t>((i + 1) * width));
    if (has_labels()) out.labels.push_back(labels[i]);
  }
  return out;
}

absl::StatusOr<VerticalTable> ReadVerticalTable(const VerticalDataSpec& spec) {
  absl::StatusOr<VerticalTable> table;
  if (spec.dataset == "csv") {
    table = ReadCsvTable(spec);
  } else if (spec.dataset == "fashion-mnist") {
    table = ReadFashionMnistTable(spec);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("data.dataset: expected \"csv\" or \"fashion-mnist\", got ", Quoted(spec.dataset)));
  }
  if (!table.ok()) return table.status();
  if (spec.keep_fraction < 1.0) {
    // A seeded choice of rows, kept in file order.
    std::vector<size_t> keep = SeededPermutation(table->rows(), Mix(spec.keep_seed ^ kKeepStream));
    keep.resize(static_cast<size_t>(std::llround(static_cast<double>(table->rows()) * spec.keep_fraction)));
    std::sort(keep.begin(), keep.end());
    *table = table->Rows(keep);
  }
  if (spec.max_rows > 0 && table->rows() > static_cast<size_t>(spec.max_rows)) {
    std::vector<size_t> head(static_cast<size_t>(spec.max_rows));
    std::iota(head.begin(), head.end(), size_t{0});
    *table = table->Rows(head);
  }
  if (table->rows() == 0) return absl::InvalidArgumentError(absl::StrCat(spec.path, ": no rows"));
  return table;
}

std::vector<size_t> EpochOrder(size_t rows, uint64_t seed, uint64_t epoch) {
  return SeededPermutation(rows, Mix(Mix(seed ^ kEpochStream) + epoch));
}

AlignedSplit SplitAlignedRows(size_t rows, double eval_fraction, uint64_t seed) {
  const std::vector<size_t> order = SeededPermutation(rows, Mix(seed ^ kSplitStream));
  const double fraction = std::clamp(eval_fraction, 0.0, 1.0);
  const size_t held_out = std::min(rows, static_cast<size_t>(std::llround(static_cast<double>(rows) * fraction)));
  AlignedSplit split;
  split.train.assign(order.begin(), order.end() - static_cast<std::ptrdiff_t>(held_out));
  split.eval.assign(order.end() - static_cast<std::ptrdiff_t>(held_out), order.end());
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.eval.begin(), split.eval.end());
  return split;
}

std::vector<VerticalTable> IntersectByIdentifier(const std::vector<VerticalTable>& tables) {
  if (tables.empty()) return {};
  std::vector<std::string> common = tables[0].identifiers;
  std::sort(common.begin(), common.end());
  for (size_t t = 1; t < tables.size(); ++t) {
    std::vector<std::string> other = tables[t].identifiers;
    std::sort(other.begin(), other.end());
    std::vector<std::string> both;
    std::set_intersection(common.begin(), common.end(), other.begin(), other.end(), std::back_inserter(both));
    common = std::move(both);
  }
  std::vector<VerticalTable> aligned;
  for (const VerticalTable& table : tables) {
    std::unordered_map<std::string_view, size_t> row_of;
    for (size_t i = 0; i < table.rows(); ++i) row_of.emplace(table.identifiers[i], i);
    std::vector<size_t> indices;
    indices.reserve(common.size());
    for (const std::string& id : common) indices.push_back(row_of.at(id));
    aligned.push_back(table.Rows(indices));
  }
  return aligned;
}

}  // namespace cohort::training
