#pragma once
// Subcommands of the `cohort` binary. Each Add*Command registers one top-level
// subcommand on `app`; when it runs, it stores its process exit code in *exit_code:
// 0 success, 1 the operation failed (verification failed, job failed), 2 bad input
// (unknown key, wrong type, impossible value; the message names the input).

#include <CLI/CLI.hpp>

namespace cohort::cli {

void AddServerCommand(CLI::App& app, int* exit_code);
void AddClientCommand(CLI::App& app, int* exit_code);
void AddRunCommand(CLI::App& app, int* exit_code);
void AddPrivacyCommand(CLI::App& app, int* exit_code);
void AddAuditCommand(CLI::App& app, int* exit_code);
void AddProvisionCommand(CLI::App& app, int* exit_code);
void AddAdminCommand(CLI::App& app, int* exit_code);
void AddReportCommand(CLI::App& app, int* exit_code);

}  // namespace cohort::cli
