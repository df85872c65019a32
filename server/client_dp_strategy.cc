#include "server/client_dp_strategy.h"

#include "absl/strings/str_cat.h"

namespace cohort::server {

ClientDpStrategy::ClientDpStrategy(std::unique_ptr<JobPrivacy> privacy, const core::Manifest& manifest)
    : privacy_(std::move(privacy)), inner_(manifest, /*cap_weights=*/false) {}

absl::StatusOr<std::unique_ptr<ClientDpStrategy>> ClientDpStrategy::Create(const core::JobConfig& config,
                                                                         const core::Manifest& manifest) {
  absl::StatusOr<std::unique_ptr<JobPrivacy>> privacy = JobPrivacy::Create(config.privacy);
  if (!privacy.ok()) return privacy.status();
  return std::unique_ptr<ClientDpStrategy>(new ClientDpStrategy(std::move(*privacy), manifest));
}

absl::Status ClientDpStrategy::BeginRound(const RoundStart& start) {
  const core::JobConfig& config = *start.config;
  // Sampling rate over the sites that could be selected, at the configured per-round
  // count (the denominator of the noised mean), as the accounting assumes.
  const size_t per_round = static_cast<size_t>(config.federation.clients_per_round);
  absl::StatusOr<bool> fits =
      privacy_->NextRoundFits(config.privacy, start.population, per_round, config.federation.rounds);
  if (!fits.ok()) return fits.status();
  if (!*fits) {
    return absl::ResourceExhaustedError(absl::StrCat("the job's privacy budget (epsilon ",
                                                     config.privacy.target_epsilon, ") would be exceeded by round ",
                                                     start.round, "; spent ", privacy_->epsilon_spent()));
  }
  if (absl::Status s = inner_.BeginRound(start); !s.ok()) return s;
  std::lock_guard lock(mu_);
  norms_.clear();
  global_ = start.global;
  round_ = start.round;
  per_round_ = per_round;
  return absl::OkStatus();
}

void ClientDpStrategy::Accept(core::SpooledUpdate update) {
  {
    std::lock_guard lock(mu_);
    norms_.push_back(update.l2_norm);
  }
  // The clip factor, whatever the site declared: one site's whole contribution has norm
  // at most C, which is what the noise is calibrated to.
  update.weight = privacy_->Weight(update.l2_norm);
  inner_.Accept(std::move(update));
}

absl::StatusOr<RoundOutcome> ClientDpStrategy::CloseRound() {
  absl::StatusOr<RoundOutcome> outcome = inner_.CloseRound();
  if (!outcome.ok()) return outcome.status();
  std::vector<double> norms;
  {
    std::lock_guard lock(mu_);
    norms = norms_;
  }
  absl::StatusOr<nlohmann::json> report = privacy_->PrivatizeRound(*global_, *outcome->next, norms, per_round_);
  if (!report.ok()) return report.status();
  outcome->report["privacy"] = *report;
  std::lock_guard lock(mu_);
  NoteRoundLocked(report->value("sampling_rate", 0.0), report->value("noise_multiplier", 0.0));
  last_report_ = *report;
  return outcome;
}

void ClientDpStrategy::NoteRoundLocked(double sampling_rate, double noise_multiplier) {
  if (!steps_.empty() && steps_.back().value("sampling_rate", -1.0) == sampling_rate &&
      steps_.back().value("noise_multiplier", -1.0) == noise_multiplier) {
    steps_.back()["rounds"] = steps_.back().value("rounds", int64_t{0}) + 1;
    return;
  }
  steps_.push_back({{"sampling_rate", sampling_rate}, {"noise_multiplier", noise_multiplier}, {"rounds", 1}});
}

nlohmann::json ClientDpStrategy::SaveState() const {
  std::lock_guard lock(mu_);
  return {{"steps", steps_}, {"last", last_report_}};
}

absl::Status ClientDpStrategy::RestoreState(const nlohmann::json& state, const nlohmann::json& rounds) {
  std::lock_guard lock(mu_);
  steps_ = nlohmann::json::array();
  last_report_ = nullptr;
  if (state.is_object() && state.contains("steps") && state["steps"].is_array()) {
    steps_ = state["steps"];
    last_report_ = state.value("last", nlohmann::json());
    return privacy_->RestoreSteps(steps_, last_report_);
  }
  // Checkpoints of earlier versions: every round's report, in the state or (before
  // strategies kept state) in the summary's rounds; replayed, then kept the compact way.
  const nlohmann::json& replay = state.is_object() && state.contains("rounds") ? state["rounds"] : rounds;
  if (absl::Status s = privacy_->Restore(replay); !s.ok()) return s;
  if (replay.is_array()) {
    for (const nlohmann::json& r : replay) {
      if (!r.is_object() || !r.contains("privacy") || !r["privacy"].is_object()) continue;
      NoteRoundLocked(r["privacy"].value("sampling_rate", 0.0), r["privacy"].value("noise_multiplier", 0.0));
      last_report_ = r["privacy"];
    }
  }
  return absl::OkStatus();
}

}  // namespace cohort::server
