#include "server/round_evaluation.h"

#include "core/round_tracker.h"

namespace cohort::server {

RoundEvaluation::~RoundEvaluation() {
  if (thread_.joinable()) thread_.join();
}

void RoundEvaluation::Start(uint64_t round, std::shared_ptr<const core::ParameterSet> model) {
  if (!evaluate_) return;
  if (thread_.joinable()) thread_.join();  // a caller that skipped Wait: keep one at a time
  result_.reset();
  thread_ = std::thread([this, round, model = std::move(model)] {
    const core::Clock::time_point started = core::Clock::now();
    absl::StatusOr<core::EvalMetrics> test = evaluate_(*model);
    result_ = Result{round, std::move(test), std::chrono::duration<double>(core::Clock::now() - started).count()};
    if (on_done_) on_done_(*result_);
  });
}

std::optional<RoundEvaluation::Result> RoundEvaluation::Wait() {
  if (!thread_.joinable()) return std::nullopt;
  thread_.join();
  return std::exchange(result_, std::nullopt);
}

}  // namespace cohort::server
