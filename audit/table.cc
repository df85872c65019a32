#include "audit/table.h"

#include <algorithm>
#include <array>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cohort::audit {
namespace {

// Decodes one UTF-8 code point at text[*i] and advances *i; returns -1 (and
// advances by one byte) for a byte that does not start a valid sequence.
std::int32_t NextCodePoint(std::string_view text, std::size_t* i) {
  const auto byte = [&](std::size_t k) { return static_cast<std::uint8_t>(text[k]); };
  const std::uint8_t b0 = byte(*i);
  int length = 0;
  std::int32_t cp = 0;
  if (b0 < 0x80) {
    ++*i;
    return b0;
  } else if ((b0 & 0xe0) == 0xc0) {
    length = 2;
    cp = b0 & 0x1f;
  } else if ((b0 & 0xf0) == 0xe0) {
    length = 3;
    cp = b0 & 0x0f;
  } else if ((b0 & 0xf8) == 0xf0) {
    length = 4;
    cp = b0 & 0x07;
  } else {
    ++*i;
    return -1;
  }
  if (*i + length > text.size()) {
    ++*i;
    return -1;
  }
  for (int k = 1; k < length; ++k) {
    const std::uint8_t b = byte(*i + k);
    if ((b & 0xc0) != 0x80) {
      ++*i;
      return -1;
    }
    cp = (cp << 6) | (b & 0x3f);
  }
  static constexpr std::array<std::int32_t, 5> kMinimum = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinimum[length] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    ++*i;
    return -1;
  }
  *i += length;
  return cp;
}

bool MustEscape(std::int32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

std::size_t DisplayWidth(std::string_view text) {
  std::size_t width = 0;
  for (std::size_t i = 0; i < text.size();) {
    NextCodePoint(text, &i);
    ++width;
  }
  return width;
}

// Cuts `text` (already escaped, so plain UTF-8) to at most `max_chars` characters.
std::string Cut(std::string text, std::size_t max_chars) {
  if (DisplayWidth(text) <= max_chars) return text;
  std::size_t i = 0;
  for (std::size_t chars = 0; chars + 3 < max_chars && i < text.size(); ++chars) {
    NextCodePoint(text, &i);
  }
  text.resize(i);
  return text + "...";
}

std::string ValueText(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string ChangeText(const Entry& entry) {
  if (entry.old_value.is_null() && entry.new_value.is_null()) return "";
  return absl::StrCat(ValueText(entry.old_value), " -> ", ValueText(entry.new_value));
}

}  // namespace

std::string EscapeForTerminal(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t start = i;
    const std::int32_t cp = NextCodePoint(text, &i);
    if (cp < 0) {
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", static_cast<std::uint8_t>(text[start])));
    } else if (MustEscape(cp)) {
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", cp));
    } else {
      out.append(text.substr(start, i - start));
    }
  }
  return out;
}

std::string FormatEntryTable(const std::vector<Entry>& entries) {
  const bool any_reason = std::any_of(entries.begin(), entries.end(),
                                      [](const Entry& e) { return e.reason.has_value(); });
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"SEQ", "TIME", "ACTOR", "ROLE", "ACTION", "TARGET", "CHANGE"});
  if (any_reason) rows.front().push_back("REASON");
  for (const Entry& entry : entries) {
    std::vector<std::string> row = {
        absl::StrCat(entry.seq), entry.time,       entry.actor, entry.role, entry.action,
        entry.target.ToString(), ChangeText(entry)};
    if (any_reason) row.push_back(entry.reason.value_or(""));
    for (std::string& cell : row) cell = Cut(EscapeForTerminal(cell), kMaxTableCellChars);
    rows.push_back(std::move(row));
  }

  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(row[c]));
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - DisplayWidth(row[c]) + 2, ' ');
    }
    // The last column is not padded, but an empty last cell leaves padding behind.
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  return out;
}

}  // namespace cohort::audit
