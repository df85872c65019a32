#include "training/text_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/limits.h"
#include "core/quote.h"

namespace cohort::training {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ReadTextFile(const fs::path& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read ", path.string(), ": ", ec.message()));
  if (size > core::kMaxDataFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", size, " bytes, over the limit of ",
                                                   core::kMaxDataFileBytes, " for one data file; split it"));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) {
    return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  }
  return text;
}

// BOS doc EOS for each document of `text` (documents end at lines holding only "%").
std::vector<int64_t> TokenStream(std::string_view text) {
  std::vector<int64_t> out;
  out.reserve(text.size() + 16);
  std::string document;
  auto flush = [&] {
    if (document.empty()) return;
    out.push_back(ByteTokenizer::kBos);
    const std::vector<int64_t> ids = ByteTokenizer::Encode(document);
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(ByteTokenizer::kEos);
    document.clear();
  };
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    end = end == std::string_view::npos ? text.size() : end + 1;
    const std::string_view line = text.substr(begin, end - begin);
    if (line == "%\n" || line == "%") {
      flush();
    } else {
      document.append(line);
    }
    begin = end;
  }
  flush();
  return out;
}

absl::StatusOr<std::vector<std::string>> ListFiles(const TextDataOptions& options) {
  if (!options.files.empty()) return options.files;
  std::vector<std::string> names;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(options.path, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || entry.is_symlink() || name.ends_with(".dat") || name.ends_with(".u8")) continue;
    names.push_back(name);
  }
  if (ec) {
    return absl::NotFoundError(absl::StrCat("data.path: cannot list ", options.path, ": ", ec.message(),
                                            " (for the fortunes corpus: apt-get install fortunes)"));
  }
  std::sort(names.begin(), names.end());
  if (names.empty()) return absl::NotFoundError(absl::StrCat("data.path: no text files in ", options.path));
  return names;
}

}  // namespace

std::vector<int64_t> ByteTokenizer::Encode(std::string_view text) {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::Decode(std::span<const int64_t> ids) {
  std::string out;
  for (int64_t id : ids) {
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(id));
  }
  return out;
}

absl::StatusOr<Dataset> ReadTextWindows(const TextDataOptions& options, Split split) {
  if (options.sequence_length < 1 || options.sequence_length > (1 << 14)) {
    return absl::InvalidArgumentError(
        absl::StrCat("data.sequence_length: expected an integer in [1, 16384], got ", options.sequence_length));
  }
  if (!(options.test_fraction >= 0 && options.test_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("text test fraction: expected a number in [0, 1), got ", options.test_fraction));
  }
  const bool is_file = fs::is_regular_file(options.path);
  if (is_file && !options.files.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data.files: given, but data.path ", options.path, " is a file; make data.path a directory"));
  }
  std::vector<std::string> names;
  if (is_file) {
    names = {fs::path(options.path).filename().string()};
  } else {
    absl::StatusOr<std::vector<std::string>> listed = ListFiles(options);
    if (!listed.ok()) return listed.status();
    names = std::move(*listed);
  }
  const int64_t t = options.sequence_length;
  Dataset out;
  out.example_shape = {t};
  out.label_shape = {t};
  out.num_classes = ByteTokenizer::kVocabSize;
  for (size_t f = 0; f < names.size(); ++f) {
    if (names[f].empty() || names[f].find('/') != std::string::npos || names[f] == "..") {
      return absl::InvalidArgumentError(absl::StrCat("data.files[", f, "]: expected a file name in data.path, got ",
                                                     core::QuotePrefix(names[f])));
    }
    const fs::path path = is_file ? fs::path(options.path) : fs::path(options.path) / names[f];
    absl::StatusOr<std::string> text = ReadTextFile(path);
    if (!text.ok()) return text.status();
    const std::vector<int64_t> stream = TokenStream(*text);
    const int64_t windows = stream.size() < 2 ? 0 : static_cast<int64_t>(stream.size() - 1) / t;
    const int64_t test = static_cast<int64_t>(static_cast<double>(windows) * options.test_fraction);
    const int64_t first = split == Split::kTrain ? 0 : windows - test;
    const int64_t last = split == Split::kTrain ? windows - test : windows;
    out.group_names.push_back(names[f]);
    for (int64_t w = first; w < last; ++w) {
      const auto begin = stream.begin() + w * t;
      for (int64_t i = 0; i < t; ++i) out.features.push_back(static_cast<float>(begin[i]));
      out.labels.insert(out.labels.end(), begin + 1, begin + 1 + t);
      out.groups.push_back(static_cast<int64_t>(f));
    }
  }
  if (out.size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("data.path ", options.path, ": no ",
                                                   split == Split::kTrain ? "training" : "held-out", " window of ", t + 1,
                                                   " tokens in ", names.size(), " file(s); lower data.sequence_length"));
  }
  return out;
}

}  // namespace cohort::training
