#pragma once
// Reader for the published test-vector files shipped by python3-cryptography-vectors
// (NIST CAVP .rsp files and the RFC vector text files). All of them share one shape:
//   # comment
//   [Section = value]          applies to the records that follow
//   COUNT = 0                  starts a record (also "Count")
//   Key = 00ff...              a field of the current record (value may be empty)
//   FAIL                       marks the current record as an expected failure
// Blank lines carry no meaning (RFC 5869's file has one inside a record).

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cohort::crypto::testing {

struct VectorRecord {
  std::map<std::string, std::string> section;  // The [K = V] lines in force.
  std::map<std::string, std::string> fields;
  bool fail = false;
  int line = 0;  // Where the record starts, for failure messages.

  const std::string& Field(const std::string& key) const {
    static const std::string kMissing = "<missing>";
    auto it = fields.find(key);
    return it == fields.end() ? kMissing : it->second;
  }
};

inline std::filesystem::path VectorsDir() { return COHORT_CRYPTO_VECTORS_DIR; }

// Reads `relative` under the vectors directory. The error says how to get the files.
inline absl::StatusOr<std::vector<VectorRecord>> LoadVectorFile(const std::string& relative) {
  const std::filesystem::path path = VectorsDir() / relative;
  if (!std::filesystem::is_directory(VectorsDir())) {
    return absl::NotFoundError(absl::StrCat(
        "test vector directory ", VectorsDir().string(),
        " does not exist: install the Debian package python3-cryptography-vectors "
        "(scripts/setup.sh installs it), or point COHORT_CRYPTO_VECTORS_DIR at a copy"));
  }
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open test vector file ", path.string(),
                                            ": reinstall python3-cryptography-vectors"));
  }
  std::vector<VectorRecord> records;
  std::map<std::string, std::string> section;
  std::string raw;
  int line_number = 0;
  while (std::getline(in, raw)) {
    ++line_number;
    const std::string line(absl::StripAsciiWhitespace(raw));
    if (line.empty() || line[0] == '#') continue;
    if (line.front() == '[' && line.back() == ']') {
      const std::string inner = line.substr(1, line.size() - 2);
      const auto eq = inner.find('=');
      if (eq == std::string::npos) continue;
      section[std::string(absl::StripAsciiWhitespace(inner.substr(0, eq)))] =
          std::string(absl::StripAsciiWhitespace(inner.substr(eq + 1)));
      continue;
    }
    if (line == "FAIL") {
      if (!records.empty()) records.back().fail = true;
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (absl::AsciiStrToUpper(key) == "COUNT") {
      records.push_back(VectorRecord{section, {}, false, line_number});
    }
    if (records.empty()) continue;
    records.back().fields[key] = value;
  }
  return records;
}

inline std::vector<std::uint8_t> HexToBytes(const std::string& hex) {
  std::vector<std::uint8_t> out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

inline std::string BytesToHex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

}  // namespace cohort::crypto::testing
