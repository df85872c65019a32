#pragma once
// The human view of audit entries printed by `cohort audit show`.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "audit/entry.h"

namespace cohort::audit {

// Cells longer than this many characters are cut and end in "..."; the full
// values are in `cohort audit show --json`.
inline constexpr std::size_t kMaxTableCellChars = 64;

// A header row and one row per entry, columns aligned with spaces:
//   SEQ  TIME  ACTOR  ROLE  ACTION  TARGET  CHANGE (old -> new)  [REASON]
// REASON appears only when some entry has one. Values come from the log, which
// anyone with write access to the file could have edited, so control and
// bidirectional-override characters are shown escaped (\u001b) and never reach
// the terminal raw.
std::string FormatEntryTable(const std::vector<Entry>& entries);

// `text` with control, C1 and bidirectional-override characters escaped as
// \uXXXX, and bytes that are not UTF-8 as \xNN.
std::string EscapeForTerminal(std::string_view text);

}  // namespace cohort::audit
