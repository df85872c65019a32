#include "server/aggregation_strategy.h"

#include "absl/strings/str_cat.h"
#include "server/client_dp_strategy.h"
#include "server/fedavg_strategy.h"

namespace cohort::server {

absl::StatusOr<std::unique_ptr<AggregationStrategy>> MakeAggregationStrategy(const core::JobConfig& config,
                                                                             const core::Manifest& manifest) {
  if (absl::Status s = manifest.CheckAllFloat32("FedAvg"); !s.ok()) return s;
  if (config.federation.strategy != "fedavg") {
    return absl::InvalidArgumentError(
        absl::StrCat("federation.strategy: expected \"fedavg\", got \"", config.federation.strategy, "\""));
  }
  if (config.privacy.mechanism == "client_dp") {
    absl::StatusOr<std::unique_ptr<ClientDpStrategy>> dp = ClientDpStrategy::Create(config, manifest);
    if (!dp.ok()) return dp.status();
    return std::unique_ptr<AggregationStrategy>(std::move(*dp));
  }
  return std::unique_ptr<AggregationStrategy>(std::make_unique<FedAvgStrategy>(manifest, /*cap_weights=*/true));
}

}  // namespace cohort::server
