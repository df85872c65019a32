#pragma once
// The server's side of client-level differential privacy (DP-FedAvg, McMahan et al. 2018,
// "Learning Differentially Private Recurrent Language Models"), with optional adaptive
// clipping (Andrew et al. 2021), and its accounting over rounds.
//
// Each accepted update u_k gets FedAvg weight c_k = min(1, C / ||u_k||), so its
// contribution c_k * u_k has norm <= C whatever the site's sample count. When a round
// closes, the new model is
//     global + (sum_k c_k u_k + N(0, sigma^2 C^2 I)) / n,   n = clients_per_round,
// a fixed denominator so that one site's presence changes the sum by at most C. Rounds
// are composed in an RDP accountant with sampling rate q = n / (sites known to the job):
// selection is uniform without replacement, which the Poisson-subsampled analysis
// approximates (as TF-Privacy and Opacus do for fixed-size batches). Before each round
// the job asks whether one more round stays within its (epsilon, delta); when it does
// not, the job ends. Noise comes from a CSPRNG seeded by the operating system.

#include <cstddef>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/job_config.h"
#include "core/parameter_set.h"
#include "privacy/client_dp.h"
#include "privacy/rdp_accountant.h"

namespace cohort::server {

class JobPrivacy {
 public:
  // InvalidArgument when `config` asks for client_dp with settings that cannot work.
  static absl::StatusOr<std::unique_ptr<JobPrivacy>> Create(const core::PrivacyConfig& config);

  // The clip bound in force this round.
  double clip_norm() const;
  // The FedAvg weight of an update of this norm: its clip factor.
  double Weight(double update_norm) const;

  // Before a round with `population` sites known and `per_round` selected: OK(true) when one
  // more round stays within the budget. The first call fixes sigma when the config leaves
  // it to the budget (the smallest one that lasts `rounds` rounds at this sampling rate).
  absl::StatusOr<bool> NextRoundFits(const core::PrivacyConfig& config, size_t population, size_t per_round,
                                     int64_t rounds);

  // Turns `next` (global + sum c_k u_k / sum c_k, what FedAvg produced with the clip
  // weights) into global + (sum c_k u_k + noise) / per_round, composes the round, updates
  // an adaptive bound from `norms`, and returns what summary.json shows for the round.
  absl::StatusOr<nlohmann::json> PrivatizeRound(const core::ParameterSet& global, core::ParameterSet& next,
                                                const std::vector<double>& norms, size_t per_round);

  // Replays the rounds of a resumed job (summary.json's "rounds") into the accountant: a
  // restarted server never forgets what the job has spent.
  absl::Status Restore(const nlohmann::json& rounds);
  // The same from runs of equal rounds ({"sampling_rate", "noise_multiplier", "rounds"}) and
  // the last round's report (ClientDpStrategy::SaveState).
  absl::Status RestoreSteps(const nlohmann::json& steps, const nlohmann::json& last);

  double epsilon_spent() const { return epsilon_; }

 private:
  JobPrivacy(core::PrivacyConfig config, privacy::NoiseSource noise);

  core::PrivacyConfig config_;
  privacy::NoiseSource noise_;
  privacy::RdpAccountant accountant_;
  std::optional<privacy::AdaptiveClipper> clipper_;
  double sigma_ = 0;  // noise multiplier of the model update, fixed at the first round
  double sigma_total_ = 0;  // the round's total multiplier (adaptive: update and count together)
  double q_ = 0;
  double epsilon_ = 0;
};

}  // namespace cohort::server
