#pragma once
// What a client measures during a round and reports with its update.

#include <cstdint>

namespace cohort::core {

struct TrainMetrics {
  double train_loss = 0;     // mean loss over the round's last local epoch
  double eval_loss = 0;      // on the client's held-out split
  double eval_accuracy = 0;  // on the client's held-out split, in [0, 1]
  uint64_t eval_samples = 0;
  double train_seconds = 0;
  // CPU time of the site's process over the same span as train_seconds (all its threads;
  // for a data-parallel site, worker 0's process only): what the round's compute floor adds
  // up (docs/benchmarks.md, "Rounds against the compute floor").
  double train_cpu_seconds = 0;
  uint64_t steps = 0;        // optimizer steps this round
  uint64_t train_samples = 0;
};

struct EvalMetrics {
  double loss = 0;
  double accuracy = 0;
  uint64_t samples = 0;
};

}  // namespace cohort::core
