#include "server/job_privacy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace cohort::server {

JobPrivacy::JobPrivacy(core::PrivacyConfig config, privacy::NoiseSource noise)
    : config_(std::move(config)), noise_(std::move(noise)) {}

absl::StatusOr<std::unique_ptr<JobPrivacy>> JobPrivacy::Create(const core::PrivacyConfig& config) {
  if (config.mechanism != "client_dp") {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy.mechanism: server-side privacy needs \"client_dp\", got \"", config.mechanism, "\""));
  }
  absl::StatusOr<privacy::NoiseSource> noise = privacy::NoiseSource::FromOsEntropy();
  if (!noise.ok()) return noise.status();
  std::unique_ptr<JobPrivacy> job(new JobPrivacy(config, std::move(*noise)));
  if (config.adaptive_clipping) {
    absl::StatusOr<privacy::AdaptiveClipper> clipper = privacy::AdaptiveClipper::Create(
        {config.clip_norm, config.target_quantile, config.clip_learning_rate, config.count_noise_stddev});
    if (!clipper.ok()) return clipper.status();
    job->clipper_ = std::move(*clipper);
  }
  return job;
}

double JobPrivacy::clip_norm() const { return clipper_ ? clipper_->bound() : config_.clip_norm; }

double JobPrivacy::Weight(double update_norm) const {
  const double bound = clip_norm();
  return update_norm <= bound ? 1.0 : bound / update_norm;
}

absl::StatusOr<bool> JobPrivacy::NextRoundFits(const core::PrivacyConfig& config, size_t population,
                                               size_t per_round, int64_t rounds) {
  if (population == 0 || per_round == 0) return absl::FailedPreconditionError("no sites to sample from");
  q_ = std::min(1.0, static_cast<double>(per_round) / static_cast<double>(population));
  // A noise multiplier set at run time (cohort admin set noise_multiplier) applies from the
  // next round; one left to the budget is derived once.
  if (config.noise_multiplier > 0) {
    sigma_total_ = config.noise_multiplier;
  } else if (sigma_total_ == 0) {
    absl::StatusOr<privacy::NoiseResult> derived =
        privacy::NoiseMultiplierFor(config.target_epsilon, config.target_delta, q_, std::max<int64_t>(rounds, 1));
    if (!derived.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("privacy: no noise multiplier meets epsilon ",
                                                     config.target_epsilon, " over ", rounds,
                                                     " rounds at sampling rate ", q_, ": ", derived.status().message()));
    }
    sigma_total_ = derived->noise_multiplier;
  }
  sigma_ = sigma_total_;
  if (clipper_) {
    // The paper's m/20 assumes hundreds of clients a round; with a few, the count noise
    // must still exceed half the round's multiplier to fit in its budget, so it is at
    // least sigma (the update's share then grows by 1/sqrt(3/4), about 15%).
    const double count_stddev = config.count_noise_stddev > 0
                                    ? config.count_noise_stddev
                                    : std::max(static_cast<double>(per_round) / 20.0, sigma_total_);
    absl::StatusOr<double> update_sigma = privacy::AdaptiveClipper::UpdateNoiseMultiplier(sigma_total_, count_stddev);
    if (!update_sigma.ok()) return update_sigma.status();
    sigma_ = *update_sigma;
  }
  privacy::RdpAccountant trial = accountant_;
  if (absl::Status s = trial.AddSteps(q_, sigma_total_, 1); !s.ok()) return s;
  absl::StatusOr<privacy::EpsilonResult> eps = trial.GetEpsilon(config.target_delta);
  if (!eps.ok()) return eps.status();
  config_.target_epsilon = config.target_epsilon;
  config_.target_delta = config.target_delta;
  return eps->epsilon <= config.target_epsilon;
}

absl::Status JobPrivacy::Restore(const nlohmann::json& rounds) {
  if (!rounds.is_array()) return absl::OkStatus();
  for (const nlohmann::json& round : rounds) {
    if (!round.contains("privacy")) continue;
    const nlohmann::json& p = round["privacy"];
    if (absl::Status s = accountant_.AddSteps(p.value("sampling_rate", 0.0), p.value("noise_multiplier", 0.0), 1);
        !s.ok()) {
      return absl::DataLossError(absl::StrCat("round ", round.value("round", 0), " of the checkpoint: ", s.message()));
    }
    sigma_total_ = p.value("noise_multiplier", 0.0);
    epsilon_ = p.value("epsilon", 0.0);
  }
  return absl::OkStatus();
}

absl::Status JobPrivacy::RestoreSteps(const nlohmann::json& steps, const nlohmann::json& last) {
  for (const nlohmann::json& run : steps) {
    if (!run.is_object() || !run.contains("rounds") || !run["rounds"].is_number_integer()) {
      return absl::DataLossError("the checkpoint's client-level DP state: a run of rounds without a count");
    }
    if (absl::Status s = accountant_.AddSteps(run.value("sampling_rate", 0.0), run.value("noise_multiplier", 0.0),
                                              run["rounds"].get<int64_t>());
        !s.ok()) {
      return absl::DataLossError(absl::StrCat("the checkpoint's client-level DP state: ", s.message()));
    }
  }
  if (last.is_object()) {
    sigma_total_ = last.value("noise_multiplier", 0.0);
    epsilon_ = last.value("epsilon", 0.0);
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> JobPrivacy::PrivatizeRound(const core::ParameterSet& global, core::ParameterSet& next,
                                                          const std::vector<double>& norms, size_t per_round) {
  if (sigma_total_ <= 0) return absl::FailedPreconditionError("NextRoundFits must run before a round is privatized");
  double total_weight = 0;
  for (double n : norms) total_weight += Weight(n);
  const double bound = clip_norm();
  const double scale = total_weight / static_cast<double>(per_round);
  const double stddev = sigma_ * bound / static_cast<double>(per_round);
  std::span<const float> old_values = global.floats();
  std::span<float> values = next.floats();
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = old_values[i] + static_cast<float>((values[i] - old_values[i]) * scale + stddev * noise_.NextGaussian());
  }
  if (absl::Status s = accountant_.AddSteps(q_, sigma_total_, 1); !s.ok()) return s;
  absl::StatusOr<privacy::EpsilonResult> eps = accountant_.GetEpsilon(config_.target_delta);
  if (!eps.ok()) return eps.status();
  epsilon_ = eps->epsilon;
  int64_t within = 0;
  for (double n : norms) within += n <= bound ? 1 : 0;
  nlohmann::json report = {{"mechanism", "client_dp"},
                           {"clip_norm", bound},
                           {"noise_multiplier", sigma_total_},
                           {"sampling_rate", q_},
                           {"clipped_updates", static_cast<int64_t>(norms.size()) - within},
                           {"epsilon", epsilon_},
                           {"delta", config_.target_delta},
                           {"target_epsilon", config_.target_epsilon}};
  if (clipper_) {
    if (absl::Status s = clipper_->Update(within, std::max<int64_t>(1, static_cast<int64_t>(norms.size())), noise_);
        !s.ok()) {
      return s;
    }
    report["next_clip_norm"] = clipper_->bound();
  }
  return report;
}

}  // namespace cohort::server
