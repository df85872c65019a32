#pragma once
// Client-level differential privacy as a wrapper strategy (server/job_privacy.h has the
// mechanism): each update's weight is its clip factor min(1, C / ||u||), never the
// samples its site declared; the inner streaming FedAvg folds the clipped updates as they
// arrive, and at close the wrapper turns their weighted mean into the noised sum over a
// fixed denominator and composes the round in the accountant. Before each round it asks
// whether one more round fits the budget: ResourceExhausted when it does not.
//
// State for the checkpoint: the privacy report of every round so far, which the
// accountant replays on resume (a restarted server never forgets what the job spent).

#include <memory>
#include <mutex>
#include <vector>

#include "server/fedavg_strategy.h"
#include "server/job_privacy.h"

namespace cohort::server {

class ClientDpStrategy final : public AggregationStrategy {
 public:
  static absl::StatusOr<std::unique_ptr<ClientDpStrategy>> Create(const core::JobConfig& config,
                                                                  const core::Manifest& manifest);

  std::string_view name() const override { return "client_dp"; }
  absl::Status BeginRound(const RoundStart& start) override;
  void Accept(core::SpooledUpdate update) override;
  absl::StatusOr<RoundOutcome> CloseRound() override;
  nlohmann::json SaveState() const override;
  absl::Status RestoreState(const nlohmann::json& state, const nlohmann::json& rounds) override;
  bool RecycleSpoolFile(const std::filesystem::path& path) override { return inner_.RecycleSpoolFile(path); }

 private:
  ClientDpStrategy(std::unique_ptr<JobPrivacy> privacy, const core::Manifest& manifest);

  std::unique_ptr<JobPrivacy> privacy_;
  FedAvgStrategy inner_;
  std::shared_ptr<const core::ParameterSet> global_;
  uint64_t round_ = 0;
  size_t per_round_ = 0;
  mutable std::mutex mu_;      // Accept runs on upload threads
  std::vector<double> norms_;  // of this round's accepted updates
  // What the accountant composed so far, as runs of rounds with the same sampling rate and
  // noise multiplier ({"sampling_rate", "noise_multiplier", "rounds"}), and the last round's
  // report: a checkpoint's state stays a few lines whatever the number of rounds (a list
  // of every round's report grew by one in every checkpoint).
  nlohmann::json steps_ = nlohmann::json::array();
  nlohmann::json last_report_;
  // Adds a round of (q, sigma) to steps_.
  void NoteRoundLocked(double sampling_rate, double noise_multiplier);
};

}  // namespace cohort::server
