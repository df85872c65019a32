#pragma once
// Streaming FedAvg as an AggregationStrategy: global + sum_k(w_k d_k) / sum_k(w_k), the
// updates folded by core::StreamingFedAvg on the strategy's own fold thread as they are
// accepted, so neither an upload nor the job's lock ever waits for a fold.
//
// Weights are the samples each site declared, capped at federation.max_weight_share of
// the round's total (server/weight_cap.h). An update whose weight is at or below the cap
// threshold of the updates seen so far is folded at once (no later update can lower that
// threshold); a heavier one is held, still spooled, until the threshold has grown past
// it or the round closes and its final weight is known. Honest rounds, where no site
// holds more than the cap, fold every update but the first as it arrives.

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "server/aggregation_strategy.h"

namespace cohort::server {

// Runs StreamingFedAvg::Add on one thread of its own. Post returns at once; Drain waits
// until every posted update is folded and returns the first error since the last Reset.
class FoldWorker {
 public:
  FoldWorker(const core::Manifest& manifest, int threads);
  ~FoldWorker();
  FoldWorker(const FoldWorker&) = delete;
  FoldWorker& operator=(const FoldWorker&) = delete;

  void Post(core::SpooledUpdate update);
  absl::Status Drain();
  // After Drain: global + the weighted average of everything folded, built in the
  // accumulator's buffer (StreamingFedAvg::TakeNext); starts over empty.
  absl::StatusOr<core::ParameterSet> TakeNext(const core::ParameterSet& global);
  // After Drain: drops everything folded or pending (a retried round).
  void Reset();
  bool RecycleSpoolFile(const std::filesystem::path& path) { return fedavg_.ReuseSpoolFile(path); }

 private:
  void Loop();

  core::StreamingFedAvg fedavg_;  // touched only by the worker thread, or after Drain
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<core::SpooledUpdate> queue_;
  bool busy_ = false;
  bool quit_ = false;
  absl::Status error_;
  std::thread thread_;  // last: starts once everything above exists
};

class FedAvgStrategy final : public AggregationStrategy {
 public:
  // `cap_weights`: apply federation.max_weight_share (false for the client-DP wrapper,
  // which bounds every contribution by its clip norm instead).
  FedAvgStrategy(const core::Manifest& manifest, bool cap_weights, int fold_threads = 2);
  ~FedAvgStrategy() override;  // removes the spool files of updates it still holds

  std::string_view name() const override { return "fedavg"; }
  absl::Status BeginRound(const RoundStart& start) override;
  void Accept(core::SpooledUpdate update) override;
  absl::StatusOr<RoundOutcome> CloseRound() override;
  nlohmann::json SaveState() const override { return nullptr; }  // stateless between rounds
  absl::Status RestoreState(const nlohmann::json&, const nlohmann::json&) override { return absl::OkStatus(); }
  bool RecycleSpoolFile(const std::filesystem::path& path) override { return worker_.RecycleSpoolFile(path); }

 private:
  // Posts every held update whose weight can no longer be clamped. Under mu_.
  void ReleaseHeldLocked();

  const bool cap_weights_;
  FoldWorker worker_;
  std::mutex mu_;  // Accept runs on upload threads
  double share_ = 1.0;  // in force for the round
  std::shared_ptr<const core::ParameterSet> global_;
  std::vector<double> weights_;             // every update accepted this round
  std::vector<core::SpooledUpdate> held_;   // accepted, weight not yet final
  // The sites in the order their updates went to the fold: the order of its float32 sums,
  // reported as the round's aggregation.fold_order so that a replay can sum alike.
  std::vector<std::string> fold_order_;
};

}  // namespace cohort::server
