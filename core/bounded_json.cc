#include "core/bounded_json.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/quote.h"

namespace cohort::core {
namespace {

// This abseil's string_view is its own type, not std::string_view.
absl::string_view View(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace

absl::Status CheckJsonBounds(std::string_view text, const JsonLimits& limits, std::string_view what) {
  if (text.size() > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(View(what), ": expected at most ", limits.max_bytes,
                                                   " bytes of JSON, got ", QuotePrefix(text), "; shorten it"));
  }
  // Depth only changes at brackets outside strings; inside a string a backslash escapes
  // the next byte (so `"\""` stays one string). Closing more than was opened is a syntax
  // error the parser reports, so the count just stops at zero.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > limits.max_depth) {
          return absl::InvalidArgumentError(
              absl::StrCat(View(what), ": expected JSON nested at most ", limits.max_depth,
                           " levels deep, got an array or object opening at level ", depth, " (byte ", i, ") in ",
                           QuotePrefix(text), "; nest it less deeply"));
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text, const JsonLimits& limits,
                                                std::string_view what) {
  if (absl::Status s = CheckJsonBounds(text, limits, what); !s.ok()) return s;
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(View(what), ": not valid JSON: ", QuotePrefix(text)));
  }
  return json;
}

absl::StatusOr<nlohmann::json> ReadBoundedJsonFile(const std::filesystem::path& path, const JsonLimits& limits,
                                                   std::string_view what) {
  const std::string named = absl::StrCat(View(what), " ", path.string());
  auto too_long = [&](std::string_view size) {
    return absl::InvalidArgumentError(
        absl::StrCat(named, ": expected at most ", limits.max_bytes, " bytes, got ", View(size), "; shorten it"));
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string why = absl::StrCat("cannot open ", named, ": ", std::strerror(error));
    return error == EACCES ? absl::PermissionDeniedError(why) : absl::NotFoundError(why);
  }
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec && size > limits.max_bytes) return too_long(absl::StrCat(size));
  // Reading stops one byte past the limit: that tells a file that grew since, or a pipe
  // or device with no size, from one that fits, without reading more.
  std::string text;
  char buffer[64 << 10];
  while (text.size() <= limits.max_bytes && in) {
    in.read(buffer, static_cast<std::streamsize>(std::min(sizeof(buffer), limits.max_bytes + 1 - text.size())));
    text.append(buffer, static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", named, ": ", std::strerror(errno)));
  if (text.size() > limits.max_bytes) return too_long("more");
  return ParseBoundedJson(text, limits, named);
}

}  // namespace cohort::core
