// The `cohort` binary: one entry point, one subcommand per role or tool.
#include <spdlog/spdlog.h>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Cohort: federated, privacy-preserving training"};
  app.require_subcommand(1);
  int exit_code = 0;

  // Registration block: one line per subcommand.
  cohort::cli::AddServerCommand(app, &exit_code);
  cohort::cli::AddClientCommand(app, &exit_code);
  cohort::cli::AddRunCommand(app, &exit_code);
  cohort::cli::AddProvisionCommand(app, &exit_code);
  cohort::cli::AddPrivacyCommand(app, &exit_code);
  cohort::cli::AddAuditCommand(app, &exit_code);
  cohort::cli::AddAdminCommand(app, &exit_code);
  cohort::cli::AddReportCommand(app, &exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints help (exit 0) or the parse error; bad flags are bad input: exit 2.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return exit_code;
}
