#pragma once
// The server's test-set evaluation of each round's model, off the rounds' critical path:
// round r's model is evaluated on a thread of its own while the sites train round r + 1.
// Its metrics join round r's summary entry as soon as they are known (the `on_done`
// callback, on that thread), and in any case before round r + 1 is recorded: the round
// driver waits for them there, and at the job's end. The model is the immutable version
// the next round trains from, shared, not copied.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "core/parameter_set.h"
#include "server/job_types.h"

namespace cohort::server {

class RoundEvaluation {
 public:
  struct Result {
    uint64_t round = 0;
    absl::StatusOr<core::EvalMetrics> test;
    double seconds = 0;
  };
  // `on_done` gets each result on the evaluating thread, before Wait returns it.
  RoundEvaluation(Evaluator evaluate, std::function<void(const Result&)> on_done)
      : evaluate_(std::move(evaluate)), on_done_(std::move(on_done)) {}
  ~RoundEvaluation();  // waits for an evaluation in progress; its result is dropped
  RoundEvaluation(const RoundEvaluation&) = delete;
  RoundEvaluation& operator=(const RoundEvaluation&) = delete;

  bool enabled() const { return static_cast<bool>(evaluate_); }
  // Starts evaluating `model` as round `round`'s. One at a time: the result of the one
  // before must have been taken (Wait). Does nothing without an evaluator.
  void Start(uint64_t round, std::shared_ptr<const core::ParameterSet> model);

  // Blocks until the started evaluation is done and returns its result; nullopt when
  // none was started since the last Wait.
  std::optional<Result> Wait();

 private:
  const Evaluator evaluate_;
  const std::function<void(const Result&)> on_done_;
  std::thread thread_;
  std::optional<Result> result_;  // written by thread_, read after joining it
};

}  // namespace cohort::server
