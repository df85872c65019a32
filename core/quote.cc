#include "core/quote.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace cohort::core {

std::string QuotePrefix(std::string_view value, std::size_t max_bytes) {
  const absl::string_view shown(value.data(), std::min(value.size(), max_bytes));
  if (shown.size() == value.size()) return absl::StrCat("\"", absl::CHexEscape(shown), "\"");
  return absl::StrCat("\"", absl::CHexEscape(shown), "\"... (", value.size(), " bytes)");
}

std::string JsonPrefix(const nlohmann::json& value, std::size_t max_bytes) {
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
  if (text.size() <= max_bytes) return text;
  const size_t size = text.size();
  text.resize(max_bytes);
  return absl::StrCat(text, "... (", size, " bytes)");
}

}  // namespace cohort::core
