#include "server/fedavg_strategy.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "server/weight_cap.h"

namespace cohort::server {

FoldWorker::FoldWorker(const core::Manifest& manifest, int threads)
    : fedavg_(manifest, threads), thread_([this] { Loop(); }) {}

FoldWorker::~FoldWorker() {
  {
    std::lock_guard lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
  // Posted but never folded: their spool files go with them (fedavg_ removes its own).
  for (const core::SpooledUpdate& u : queue_) {
    std::error_code ignored;
    std::filesystem::remove(u.path, ignored);
  }
}

void FoldWorker::Post(core::SpooledUpdate update) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(update));
  }
  cv_.notify_all();
}

void FoldWorker::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return quit_ || !queue_.empty(); });
    if (quit_) return;
    core::SpooledUpdate update = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    absl::Status folded = fedavg_.Add(std::move(update));
    lock.lock();
    busy_ = false;
    if (!folded.ok() && error_.ok()) error_ = std::move(folded);
    cv_.notify_all();
  }
}

absl::Status FoldWorker::Drain() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
  return error_;
}

absl::StatusOr<core::ParameterSet> FoldWorker::TakeNext(const core::ParameterSet& global) {
  return fedavg_.TakeNext(global);
}

void FoldWorker::Reset() {
  std::lock_guard lock(mu_);
  for (const core::SpooledUpdate& u : queue_) {
    std::error_code ignored;
    std::filesystem::remove(u.path, ignored);
  }
  queue_.clear();
  fedavg_.Reset();
  error_ = absl::OkStatus();
}

FedAvgStrategy::FedAvgStrategy(const core::Manifest& manifest, bool cap_weights, int fold_threads)
    : cap_weights_(cap_weights), worker_(manifest, fold_threads) {}

FedAvgStrategy::~FedAvgStrategy() {
  for (const core::SpooledUpdate& u : held_) {
    std::error_code ignored;
    std::filesystem::remove(u.path, ignored);
  }
}

absl::Status FedAvgStrategy::BeginRound(const RoundStart& start) {
  (void)worker_.Drain();  // whatever an abandoned attempt posted, then drop it all
  worker_.Reset();
  std::lock_guard lock(mu_);
  for (const core::SpooledUpdate& u : held_) {
    std::error_code ignored;
    std::filesystem::remove(u.path, ignored);
  }
  held_.clear();
  weights_.clear();
  fold_order_.clear();
  global_ = start.global;
  share_ = cap_weights_ && start.config != nullptr ? start.config->federation.max_weight_share : 1.0;
  return absl::OkStatus();
}

void FedAvgStrategy::Accept(core::SpooledUpdate update) {
  std::lock_guard lock(mu_);
  weights_.push_back(update.weight);
  if (share_ >= 1.0) {
    fold_order_.push_back(update.client_id);
    worker_.Post(std::move(update));
    return;
  }
  held_.push_back(std::move(update));
  ReleaseHeldLocked();
}

void FedAvgStrategy::ReleaseHeldLocked() {
  // The threshold of the updates so far at the configured share is a lower bound of the
  // round's final one (weight_cap.h), so these weights are final.
  const double threshold = WeightCapThreshold(weights_, share_);
  for (auto it = held_.begin(); it != held_.end();) {
    if (it->weight <= threshold) {
      fold_order_.push_back(it->client_id);
      worker_.Post(std::move(*it));
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<RoundOutcome> FedAvgStrategy::CloseRound() {
  nlohmann::json clamped = nlohmann::json::array();
  double total_weight = 0;
  size_t updates = 0;
  std::shared_ptr<const core::ParameterSet> global;
  std::vector<std::string> fold_order;
  {
    std::lock_guard lock(mu_);
    updates = weights_.size();
    const double share = EffectiveWeightShare(share_, updates);
    const double threshold = WeightCapThreshold(weights_, share);
    for (double w : weights_) total_weight += std::min(w, threshold);
    for (core::SpooledUpdate& u : held_) {
      if (u.weight > threshold) {
        clamped.push_back({{"site", u.client_id}, {"declared", u.weight}, {"weight", threshold}});
        spdlog::warn("site={} weight {} clamped to {} (federation.max_weight_share {})", u.client_id, u.weight,
                     threshold, share_);
        u.weight = threshold;
      }
      fold_order_.push_back(u.client_id);
      worker_.Post(std::move(u));
    }
    held_.clear();
    global = global_;
    fold_order = fold_order_;
  }
  if (absl::Status s = worker_.Drain(); !s.ok()) return s;
  if (global == nullptr) return absl::FailedPreconditionError("CloseRound before BeginRound");
  // In the accumulator's buffer: no copy of the global model.
  absl::StatusOr<core::ParameterSet> next = worker_.TakeNext(*global);
  if (!next.ok()) return next.status();
  RoundOutcome outcome;
  outcome.next = std::make_shared<core::ParameterSet>(std::move(*next));
  outcome.report["aggregation"] = {{"strategy", "fedavg"},
                                   {"updates", updates},
                                   {"total_weight", total_weight},
                                   {"max_weight_share", share_},
                                   {"clamped", clamped},
                                   {"fold_order", fold_order}};
  return outcome;
}

}  // namespace cohort::server
