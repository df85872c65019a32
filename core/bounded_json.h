#pragma once
// Parsing JSON that someone else wrote: a file, a message, a line of a log. nlohmann's
// parser itself is iterative, but a parsed tree is copied, compared and printed
// recursively, so a document nested 100,000 levels deep parses and then overflows the
// stack wherever it is used; and a 50 MB value gets echoed whole into errors. These
// functions refuse a document over its JsonLimits (core/limits.h) before any tree is
// built, with an error that names the document, the limit and the fix and quotes only
// a short prefix of the input.

#include <filesystem>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/limits.h"

namespace cohort::core {

// OK when `text` is at most limits.max_bytes long and no array or object in it opens
// deeper than limits.max_depth (counted outside strings, escapes honoured), whether or
// not it is valid JSON; otherwise InvalidArgument naming `what` ("job config
// /etc/job.json", "value for training_config.learning_rate"). One linear scan, no
// allocation: for callers that parse with another JSON type (ordered_json).
absl::Status CheckJsonBounds(std::string_view text, const JsonLimits& limits, std::string_view what);

// CheckJsonBounds, then the parse: InvalidArgument "WHAT: not valid JSON (starts ...)"
// when it is not JSON.
absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text, const JsonLimits& limits,
                                                std::string_view what);

// Reads the file at `path` (refusing it by its size before reading when it is over
// limits.max_bytes) and parses it as above; errors name `what` and the path
// ("job config /etc/job.json: ..."). NotFound (PermissionDenied) when it cannot be opened.
absl::StatusOr<nlohmann::json> ReadBoundedJsonFile(const std::filesystem::path& path, const JsonLimits& limits,
                                                   std::string_view what);

}  // namespace cohort::core
