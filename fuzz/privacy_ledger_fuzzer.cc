// Fuzzes the privacy ledger reader (privacy::Ledger::Open, which parses every line with
// privacy::ledger_format and replays the spends into the accountant) with the ledger file
// written from the input. A mutated line almost never carries the hash of the line
// before it, so when the input's first byte is odd the harness repairs each
// `"prev":"<64 chars>"` to the hash of the line before, as a writer would: the parser,
// the seq numbering and the epsilon replay behind the chain are then what gets fuzzed.
// The file is the input without that first byte; it belongs to site "site-a" with a
// budget of epsilon 3, delta 1e-5 (the seeds' header).
//
// Properties beyond "no crash, leak or hang": a ledger that opens reports a finite,
// non-negative spend and remainder, and one more spend checked against it raises the spend.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_scratch.h"
#include "privacy/ledger.h"
#include "privacy/ledger_format.h"

namespace {

using namespace cohort;

std::string RepairLedger(std::string_view text) {
  std::string out;
  std::string previous_hash = privacy::ledger_format::ZeroHash();
  constexpr std::string_view kPrev = "\"prev\":\"";
  while (!text.empty()) {
    const size_t end = text.find('\n');
    if (end == std::string_view::npos) {  // a torn last line stays as it is
      out += text;
      break;
    }
    std::string line(text.substr(0, end));
    if (size_t at = line.find(kPrev); at != std::string::npos && at + kPrev.size() + 64 <= line.size()) {
      line.replace(at + kPrev.size(), 64, previous_hash);
    }
    previous_hash = privacy::ledger_format::HashLine(line);
    out += line;
    out += '\n';
    text.remove_prefix(end + 1);
  }
  return out;
}

}  // namespace

// The readers log each repair and creation at info level: a line per input would slow the
// run and bury libFuzzer's own output.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::err);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text = fuzz::AsText(data + 1, size - 1);
  const std::filesystem::path path = fuzz::ScratchDir() / "ledger.jsonl";
  fuzz::WriteWholeFile(path, (data[0] & 1) ? RepairLedger(text) : std::string(text));

  absl::StatusOr<std::unique_ptr<privacy::Ledger>> ledger =
      privacy::Ledger::Open(path.string(), "site-a", privacy::PrivacyBudget{.epsilon = 3.0, .delta = 1e-5});
  if (!ledger.ok()) return 0;
  const double spent = (*ledger)->spent_epsilon();
  if (!(spent >= 0) || !std::isfinite(spent) || (*ledger)->remaining_epsilon() < 0) {
    fuzz::PropertyFailed(absl::StrCat("a ledger opened with spent epsilon ", spent, " and remaining ",
                                      (*ledger)->remaining_epsilon()));
  }
  absl::StatusOr<privacy::SpendCheck> check = (*ledger)->CanSpend(privacy::SpendRequest{
      .job = "fuzz", .round = 1, .sampling_rate = 0.01, .noise_multiplier = 1.1, .steps = 10, .clip_norm = 1.0});
  if (!check.ok()) fuzz::PropertyFailed(absl::StrCat("CanSpend on an open ledger: ", check.status().message()));
  if (check->epsilon_after < spent) fuzz::PropertyFailed("a spend lowered the epsilon spent");
  return 0;
}
