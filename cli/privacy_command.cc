// `cohort privacy`: privacy accounting from the command line.
//   cohort privacy epsilon --sampling-rate Q --noise-multiplier S --steps T
//                          --delta D [--json]
//   cohort privacy noise --target-epsilon E --sampling-rate Q --steps T
//                        --delta D [--json]
// The computation and the text live in privacy/report.h; this file parses
// flags, prints, and sets the exit code (2 for bad or impossible input).
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "privacy/report.h"

namespace cohort::cli {
namespace {

void Emit(const absl::StatusOr<std::string>& report, int* exit_code) {
  if (report.ok()) {
    std::cout << *report;
    *exit_code = 0;
    return;
  }
  std::cerr << "cohort privacy: " << report.status().message() << "\n";
  const absl::StatusCode code = report.status().code();
  *exit_code = code == absl::StatusCode::kInvalidArgument ||
                       code == absl::StatusCode::kOutOfRange
                   ? 2
                   : 1;
}

}  // namespace

void AddPrivacyCommand(CLI::App& app, int* exit_code) {
  CLI::App* privacy_app = app.add_subcommand(
      "privacy",
      "Privacy accounting for the Poisson-subsampled Gaussian mechanism "
      "(DP-SGD, client-level DP): RDP accountant, tight (epsilon, delta) "
      "conversion");
  privacy_app->require_subcommand(1);

  // Flag storage must outlive parsing; the callbacks share it.
  auto epsilon_query = std::make_shared<privacy::EpsilonQuery>();
  auto epsilon_json = std::make_shared<bool>(false);
  CLI::App* epsilon = privacy_app->add_subcommand(
      "epsilon", "Epsilon (and the best RDP order) of a training schedule");
  epsilon
      ->add_option("--sampling-rate", epsilon_query->sampling_rate,
                   "Poisson sampling rate per step, in (0, 1] (batch / dataset "
                   "size, or clients per round / clients)")
      ->required();
  epsilon
      ->add_option("--noise-multiplier", epsilon_query->noise_multiplier,
                   "Noise stddev / clip norm, > 0")
      ->required();
  epsilon->add_option("--steps", epsilon_query->steps, "Number of steps, >= 1")
      ->required();
  epsilon->add_option("--delta", epsilon_query->delta, "Target delta, in (0, 1)")
      ->required();
  epsilon->add_flag("--json", *epsilon_json, "Print one JSON object");
  epsilon->callback([epsilon_query, epsilon_json, exit_code] {
    Emit(privacy::EpsilonReport(*epsilon_query, *epsilon_json), exit_code);
  });

  auto noise_query = std::make_shared<privacy::NoiseQuery>();
  auto noise_json = std::make_shared<bool>(false);
  CLI::App* noise = privacy_app->add_subcommand(
      "noise", "Smallest noise multiplier that meets a target epsilon");
  noise
      ->add_option("--target-epsilon", noise_query->target_epsilon,
                   "Target epsilon, > 0")
      ->required();
  noise
      ->add_option("--sampling-rate", noise_query->sampling_rate,
                   "Poisson sampling rate per step, in (0, 1]")
      ->required();
  noise->add_option("--steps", noise_query->steps, "Number of steps, >= 1")
      ->required();
  noise->add_option("--delta", noise_query->delta, "Target delta, in (0, 1)")
      ->required();
  noise->add_flag("--json", *noise_json, "Print one JSON object");
  noise->callback([noise_query, noise_json, exit_code] {
    Emit(privacy::NoiseReport(*noise_query, *noise_json), exit_code);
  });
}

}  // namespace cohort::cli
