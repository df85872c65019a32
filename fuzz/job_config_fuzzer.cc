// Fuzzes the job config loader as `cohort server --config` runs it: the bounded JSON
// parse (core::ParseBoundedJson with core::kJobConfigJson), then core::ParseJobConfig.
// Properties beyond "no crash, leak or hang":
//   - an error quotes at most a short prefix of the input (docs/reliability.md), so its
//     message stays short whatever the input's size;
//   - a config that parses writes back (core::ToJson) as one that parses to the same.

#include <cstddef>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/job_config.h"
#include "core/limits.h"
#include "fuzz/fuzz_scratch.h"

namespace {

// Far above any message that quotes kQuotedPrefixBytes of a few values, far below one
// that echoes a value whole.
constexpr size_t kMaxErrorBytes = 4096;

void CheckShort(const absl::Status& status, const char* stage) {
  if (status.message().size() > kMaxErrorBytes) {
    cohort::fuzz::PropertyFailed(absl::StrCat(stage, " error of ", status.message().size(),
                                              " bytes: ", status.message().substr(0, 200)));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cohort;
  absl::StatusOr<nlohmann::json> json =
      core::ParseBoundedJson(fuzz::AsText(data, size), core::kJobConfigJson, "job config");
  if (!json.ok()) {
    CheckShort(json.status(), "ParseBoundedJson");
    return 0;
  }
  absl::StatusOr<core::JobConfig> config = core::ParseJobConfig(*json);
  if (!config.ok()) {
    CheckShort(config.status(), "ParseJobConfig");
    return 0;
  }
  const nlohmann::json written = core::ToJson(*config);
  absl::StatusOr<core::JobConfig> again = core::ParseJobConfig(written);
  if (!again.ok()) {
    fuzz::PropertyFailed(absl::StrCat("ToJson wrote a config ParseJobConfig refuses: ", again.status().message()));
  }
  if (core::ToJson(*again) != written) fuzz::PropertyFailed("a config does not survive ToJson and ParseJobConfig");
  return 0;
}
