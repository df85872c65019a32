#pragma once
// Text as language-model data: a byte-level tokenizer and a reader that cuts plain text
// files into fixed-length windows of token ids with their next-token targets.
//
// Tokens: the 256 byte values are ids 0..255; BOS (256) starts and EOS (257) ends each
// document; PAD (258) is reserved and never produced by the reader. The vocabulary is
// therefore 259; a model may have a larger vocab_size (its extra rows are never an input
// and only ever trained towards "not next"), not a smaller one. A model_config names its
// tokenizer ("tokenizer": "bytes", the default), so model.json says how to encode text
// for the model (examples/python/cohort_models.py: ByteTokenizer).
//
// Documents: a file is split into documents at lines that hold only "%" (the fortune
// file format); a file without such lines is one document. Each file becomes one stream
// BOS doc EOS BOS doc EOS ...; the stream is cut into windows of sequence_length + 1 tokens
// overlapping by one: inputs are the first sequence_length tokens, targets the last (the
// same tokens shifted by one). The last test_fraction of each file's windows is its held-out
// text (Split::kTest), the rest its training text, so that a server can evaluate on text
// from every file while no window is in both.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "training/data_readers.h"
#include "training/dataset.h"

namespace cohort::training {

struct ByteTokenizer {
  static constexpr int64_t kBos = 256, kEos = 257, kPad = 258, kVocabSize = 259;
  static std::vector<int64_t> Encode(std::string_view text);
  // Bytes of the ids below 256, in order; special ids are dropped.
  static std::string Decode(std::span<const int64_t> ids);
};

struct TextDataOptions {
  std::string path;                // a text file, or a directory of them
  std::vector<std::string> files;  // with a directory: these names in it; empty: every file
                                   // in it except *.dat and *.u8 (fortune's index and links)
  int64_t sequence_length = 64;
  double test_fraction = 0.1;      // per file, the last windows
};

// Windows of every file, in file order; example_shape {T}, label_shape {T}, features the
// input ids as floats, groups the file of each window (group_names the file names),
// num_classes ByteTokenizer::kVocabSize. Files are refused over core::kMaxDataFileBytes;
// errors name the file and the fix.
absl::StatusOr<Dataset> ReadTextWindows(const TextDataOptions& options, Split split);

}  // namespace cohort::training
