#pragma once
// Quoting a value a caller sent inside an error message, a gRPC status or a log line.
// A hostile value can be megabytes long or hold terminal escapes; the quote is short,
// printable ASCII, and says how long the whole value was.

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/limits.h"

namespace cohort::core {

// `value` in double quotes with non-printable bytes, quotes and backslashes escaped
// (C-style hex), cut after `max_bytes` bytes of the value and then followed by
// `... (N bytes)`: QuotePrefix("[[[[...", 4) is `"[[[["... (100000 bytes)`.
std::string QuotePrefix(std::string_view value, std::size_t max_bytes = kQuotedPrefixBytes);

// A parsed value as compact JSON (non-ASCII escaped), cut the same way when its text is
// longer than `max_bytes`: `[1,2]`, `"cosine"`, `"xxxxxxxx... (52428802 bytes)`.
// The value must be a tree of bounded depth (core/bounded_json.h).
std::string JsonPrefix(const nlohmann::json& value, std::size_t max_bytes = kQuotedPrefixBytes);

}  // namespace cohort::core
