#include "training/data_parallel.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/bounded_json.h"
#include "core/limits.h"

namespace cohort::training {

absl::Status BroadcastString(Collective& group, std::string& text, int root) {
  uint64_t length = text.size();
  if (absl::Status s = group.Broadcast(std::as_writable_bytes(std::span<uint64_t>(&length, 1)), root); !s.ok()) {
    return s;
  }
  if (length > core::kTaskConfigJson.max_bytes) {
    return absl::DataLossError(absl::StrCat("worker ", root, " broadcast a ", length, "-byte order; at most ",
                                            core::kTaskConfigJson.max_bytes, " expected"));
  }
  text.resize(length);
  return group.Broadcast(std::as_writable_bytes(std::span<char>(text.data(), text.size())), root);
}

absl::Status SendRoundOrder(Collective& group, const RoundOrder& order, const core::ParameterSet* global) {
  std::string text = nlohmann::json{{"stop", order.stop},
                                    {"training_config", core::ToJson(order.config)},
                                    {"privacy", core::ToJson(order.privacy)},
                                    {"round", order.round},
                                    {"total_rounds", order.total_rounds}}
                         .dump();
  if (absl::Status s = BroadcastString(group, text, 0); !s.ok()) return s;
  if (order.stop) return absl::OkStatus();
  // Broadcast writes into its buffer on every rank; on the root it reads only.
  auto* floats = const_cast<float*>(global->floats().data());
  return group.Broadcast(std::as_writable_bytes(std::span<float>(floats, global->floats().size())), 0);
}

absl::StatusOr<RoundOrder> ReceiveRoundOrder(Collective& group, core::ParameterSet& global) {
  std::string text;
  if (absl::Status s = BroadcastString(group, text, 0); !s.ok()) return s;
  absl::StatusOr<nlohmann::json> json = core::ParseBoundedJson(text, core::kTaskConfigJson, "round order from worker 0");
  if (!json.ok()) return json.status();
  RoundOrder order;
  try {
    order.stop = json->at("stop").get<bool>();
    if (order.stop) return order;
    order.round = json->at("round").get<uint64_t>();
    order.total_rounds = json->at("total_rounds").get<uint64_t>();
    absl::StatusOr<core::TrainingConfig> config = core::ParseTrainingConfig(json->at("training_config"));
    if (!config.ok()) return config.status();
    order.config = std::move(*config);
    absl::StatusOr<core::PrivacyConfig> privacy = core::ParsePrivacyConfig(json->at("privacy"));
    if (!privacy.ok()) return privacy.status();
    order.privacy = std::move(*privacy);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("round order from worker 0: ", e.what()));
  }
  if (absl::Status s = group.Broadcast(std::as_writable_bytes(global.floats()), 0); !s.ok()) return s;
  return order;
}

Shard ShardOf(int64_t n, int rank, int size) {
  return {n * rank / size, n * (rank + 1) / size};
}

#ifndef COHORT_WITH_NCCL
bool NcclCompiledIn() { return false; }

absl::StatusOr<std::unique_ptr<Collective>> JoinNcclGroup(const GroupOptions&, Rendezvous*, int) {
  return absl::FailedPreconditionError(
      "this build has no NCCL collective: configure with a CUDA LibTorch (-DTorch_DIR=...) where "
      "/usr/local/cuda/include/nccl.h exists, or train on the CPU with Gloo");
}
#endif

}  // namespace cohort::training
