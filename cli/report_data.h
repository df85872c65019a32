#pragma once
// What `cohort report` shows of a run directory, gathered once: the same object the live
// dashboard polls from GET /api/state (docs/operability.md), built from the files a job
// leaves, so that one page renders both.

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace cohort::cli {

struct ReportSources {
  std::filesystem::path run_dir;
  std::filesystem::path audit_log;  // empty: RUN_DIR/audit.log (absent is fine)
};

// {job, round, summary_rounds, sites, audit_tail, report: {run_dir, generated, source}}.
// The rounds come from RUN_DIR/summary.json, or, while the job is still running (the server
// writes summary.json at its end), from the summary inside RUN_DIR/checkpoint.bin, which the
// report reads without the server's key and says so in `report.source`. The sites, their
// last contact and their privacy spends come from the audit log (audit::ReadEntries, each
// line bounded by core::kMaxAuditLineBytes); audit_tail is its last 50 entries.
// NotFound naming RUN_DIR when it holds neither summary.json nor checkpoint.bin;
// InvalidArgument or DataLoss naming the file when one is malformed.
absl::StatusOr<nlohmann::json> LoadReportState(const ReportSources& sources);

// How many audit entries the page shows, newest last (the dashboard's contract too).
inline constexpr std::size_t kAuditTailEntries = 50;

}  // namespace cohort::cli
