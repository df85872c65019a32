#!/usr/bin/env bash
# Rounds against the compute floor: runs a `cohort run` job RUNS times and prints, per run,
# the median round wall time (summary.json "wall_seconds"), the median compute floor (the
# round's sites' training CPU-seconds, "train_cpu_seconds", divided by the machine's
# cores) and the median of the per-round ratios (docs/benchmarks.md, "Rounds against the
# compute floor").
#
#   bench/server/round_floor.sh [RUNS] [COHORT_BINARY] [JOB] [extra `cohort run` flags...]
#   bench/server/round_floor.sh 3 build/cli/cohort configs/fashion_mnist_cnn_iid.json
#
# The floor counts only the sites' training (local steps, the held-out evaluation, the
# update's extraction); everything else the job does on these cores (the server's test of
# each model, transfers, sealing) is what the ratio measures. Run it on a quiet machine.
set -euo pipefail
runs="${1:-3}"
cohort="${2:-build/cli/cohort}"
job="${3:-configs/fashion_mnist_cnn_iid.json}"
shift $(( $# >= 3 ? 3 : $# ))
work="$(mktemp -d /tmp/cohort-round-floor-XXXXXX)"
cores="$(nproc)"
echo "job $job, $cores cores, $runs runs, outputs in $work"
for run in $(seq "$runs"); do
  "$cohort" run "$job" --out "$work/run-$run" "$@" > "$work/run-$run.log" 2>&1
  /usr/bin/python3 - "$work/run-$run/summary.json" "$cores" "$run" <<'PY'
import json, statistics, sys
rounds = json.load(open(sys.argv[1]))["rounds"]
cores = int(sys.argv[2])
walls, floors, ratios = [], [], []
for r in rounds:
    cpu = sum(c.get("train_cpu_seconds", 0) for c in r["clients"])
    floor = cpu / cores
    walls.append(r["wall_seconds"])
    floors.append(floor)
    ratios.append(r["wall_seconds"] / floor if floor > 0 else float("nan"))
last = rounds[-1]
print(f"run {sys.argv[3]}: {len(rounds)} rounds, median round {statistics.median(walls):.3f} s, "
      f"median floor {statistics.median(floors):.3f} s, median ratio {statistics.median(ratios):.3f} "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f}); final test accuracy {100 * last.get('test_accuracy', 0):.2f}%")
PY
done
