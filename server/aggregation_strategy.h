#pragma once
// The one seam between "updates arrived" and "next global model".
//
// A round's life, as the round driver calls it (one thread; Accept from upload threads):
//   BeginRound   a round (or a retry of one) is about to open: the model it trains, how
//                many clients were selected, the configuration in force. Anything accepted
//                in an earlier attempt is dropped. A strategy with nothing left to give
//                (a privacy budget spent) answers ResourceExhausted and the job ends.
//   Accept       one complete, valid update, still spooled (core::SpooledUpdate: its
//                sealed spool file, codec, weight = the samples the site declared, L2
//                norm, site). The spool file becomes the strategy's. Returns at once:
//                streaming rules fold on their own thread, never on the caller's; rules
//                that need every update (median, trimmed mean, Krum) keep them and read
//                their spool files window by window at close, never whole.
//   CloseRound   every accepted update is in: waits for its folds and produces the next
//                global model, plus a report whose members join the round's summary entry.
//   SaveState /  what must survive a restart (server momentum, a privacy accountant),
//   RestoreState written into the checkpoint after each round and read back on resume.
//
// Implementations: FedAvgStrategy (server/fedavg_strategy.h, streaming, with the
// per-site weight cap) and ClientDpStrategy (server/client_dp_strategy.h, a wrapper).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/fedavg.h"
#include "core/job_config.h"
#include "core/parameter_set.h"

namespace cohort::server {

struct RoundStart {
  uint64_t round = 0;
  int attempt = 0;  // 0 for the first try of a round
  std::shared_ptr<const core::ParameterSet> global;
  size_t selected = 0;    // clients selected for the round
  size_t population = 0;  // sites that could have been selected (joined, not declined)
  const core::JobConfig* config = nullptr;  // in force for the round; outlives the call
};

struct RoundOutcome {
  std::shared_ptr<core::ParameterSet> next;  // the next global model
  // Members added to the round's summary entry: "aggregation" always, "privacy" when the
  // round spent a privacy budget (it is also recorded as privacy.spend in the audit log).
  nlohmann::json report = nlohmann::json::object();
};

class AggregationStrategy {
 public:
  virtual ~AggregationStrategy() = default;

  virtual std::string_view name() const = 0;
  virtual absl::Status BeginRound(const RoundStart& start) = 0;
  virtual void Accept(core::SpooledUpdate update) = 0;
  virtual absl::StatusOr<RoundOutcome> CloseRound() = 0;
  virtual nlohmann::json SaveState() const = 0;
  // `state` is what SaveState returned; null for a checkpoint written without one.
  // `rounds`: summary.json's rounds so far, for strategies that can rebuild from them.
  virtual absl::Status RestoreState(const nlohmann::json& state, const nlohmann::json& rounds) = 0;

  // Moves a spool file the strategy is done with to `path`, for an upload to write over
  // (writing into page-cache pages that exist is much faster than into fresh ones,
  // docs/benchmarks.md); false when it has none. Thread-safe.
  virtual bool RecycleSpoolFile(const std::filesystem::path& /*path*/) { return false; }
};

// The strategy the job's configuration asks for (federation.strategy, privacy.mechanism).
absl::StatusOr<std::unique_ptr<AggregationStrategy>> MakeAggregationStrategy(const core::JobConfig& config,
                                                                             const core::Manifest& manifest);

}  // namespace cohort::server
