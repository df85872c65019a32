#pragma once
// One party's rows for a vertical job: an identifier per row, the party's own columns,
// and the labels where this party holds them. No LibTorch (cohort_data).
//
// Sources (VerticalDataSpec.dataset):
//   csv            a header line, then one row per person; `id_column` names the
//                  identifier, `feature_columns` the party's columns (empty: every column
//                  but the identifier and the label), `label_column` the label (empty: this
//                  party holds no labels; labels must be integers in [0, num_classes)).
//   fashion-mnist  the gzip'd IDX files under `path`; the party holds image columns
//                  [column_begin, column_end) of every 28x28 image (its features have shape
//                  {1, 28, column_end - column_begin}); rows are identified as
//                  "fmnist-train-<index>" and "fmnist-test-<index>" (`split`: train | test |
//                  all, all = train rows then test rows); `label_column` non-empty
//                  ("label") makes this party the one holding the labels.
// `keep_fraction` < 1 keeps a seeded random share of the rows (`keep_seed`), so examples
// can give two parties overlapping but different row sets; `max_rows` > 0 keeps the first
// rows only (after keep_fraction).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace cohort::training {

struct VerticalDataSpec {
  std::string dataset = "csv";  // csv | fashion-mnist
  std::string path;
  std::string id_column = "id";
  std::vector<std::string> feature_columns;
  std::string label_column;
  int64_t column_begin = 0, column_end = 28;  // fashion-mnist
  std::string split = "train";                // fashion-mnist
  double keep_fraction = 1.0;
  uint64_t keep_seed = 0;
  int64_t max_rows = 0;
};

// From JSON ({"dataset": "csv", "path": ..., "id_column": ..., ...}); InvalidArgument names
// the key and what it expected.
absl::StatusOr<VerticalDataSpec> ParseVerticalDataSpec(const nlohmann::json& json);
nlohmann::json VerticalDataSpecToJson(const VerticalDataSpec& spec);

struct VerticalTable {
  std::vector<std::string> identifiers;  // unique
  std::vector<int64_t> feature_shape;    // per row, e.g. {15} or {1, 28, 14}
  std::vector<float> features;           // rows() * feature_size(), row-major
  std::vector<int64_t> labels;           // empty unless this party holds the labels
  int64_t num_classes = 0;               // with labels: max label + 1 (at least 2)

  size_t rows() const { return identifiers.size(); }
  size_t feature_size() const;
  bool has_labels() const { return !labels.empty(); }
  // The rows at `indices`, in that order.
  VerticalTable Rows(const std::vector<size_t>& indices) const;
};

// Reads and checks the party's rows: a missing identifier column, an empty or duplicate
// identifier (FailedPrecondition quoting it and naming both line numbers), a non-numeric
// feature, a label that is not an integer: each an error naming the file and line.
absl::StatusOr<VerticalTable> ReadVerticalTable(const VerticalDataSpec& spec);

// The order of the aligned rows [0, rows) in epoch `epoch`: a permutation every party
// computes alike from the job's seed, so batches line up without sending identifiers.
std::vector<size_t> EpochOrder(size_t rows, uint64_t seed, uint64_t epoch);

// The aligned rows [0, rows) split into training and held-out rows, alike at every party:
// a seeded permutation, the last round(rows * eval_fraction) rows held out (each part in
// ascending order).
struct AlignedSplit {
  std::vector<size_t> train, eval;
};
AlignedSplit SplitAlignedRows(size_t rows, double eval_fraction, uint64_t seed);

// The rows whose identifier every table holds, in ascending identifier order at every
// table: the plaintext stand-in for private set intersection when one process holds all
// the tables (tests, in-process training and benchmarks), never across parties.
std::vector<VerticalTable> IntersectByIdentifier(const std::vector<VerticalTable>& tables);

}  // namespace cohort::training
