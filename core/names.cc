#include "core/names.h"

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cohort::core {

absl::Status ValidateName(std::string_view field, std::string_view name) {
  const auto allowed = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  };
  if (!name.empty() && name.size() <= kMaxNameBytes && absl::ascii_isalnum(static_cast<unsigned char>(name[0])) &&
      std::all_of(name.begin(), name.end(), allowed)) {
    return absl::OkStatus();
  }
  // A name from the network may be anything: quote only what fits a name, and no byte
  // that is not printable ASCII.
  std::string quoted;
  for (char c : name.substr(0, kMaxNameBytes)) quoted += (c >= 0x20 && c < 0x7f && c != '"') ? c : '?';
  if (name.size() > kMaxNameBytes) quoted += "...";
  return absl::InvalidArgumentError(absl::StrCat(absl::string_view(field.data(), field.size()), ": expected 1 to ",
                                                 kMaxNameBytes,
                                                 " characters of A-Z a-z 0-9 . _ - starting with a letter or digit, "
                                                 "got \"",
                                                 quoted, "\""));
}

}  // namespace cohort::core
