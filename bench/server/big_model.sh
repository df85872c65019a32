#!/usr/bin/env bash
# A big model through a real job on one machine: the zoo's MLP on Fashion-MNIST, widened to
# HIDDEN units in two hidden layers (784*H + H*H + 10*H parameters: 15,500 -> 252M, 31,600
# -> 1.02B), one site beside the server (`cohort run --clients 1`; CLIENTS=N in the
# environment for N sites, each training in every round), ROUNDS rounds of plain SGD without
# momentum on a few batches. Prints the peak resident memory of the server and of each site
# process (each logs it as it exits) and each round's phases (docs/benchmarks.md, "Big
# models").
#
#   bench/server/big_model.sh HIDDEN [ROUNDS] [COHORT_BINARY] [extra `cohort run` flags...]
#   bench/server/big_model.sh 31600 2
#   CLIENTS=2 bench/server/big_model.sh 24000 2
set -euo pipefail
hidden="${1:?usage: big_model.sh HIDDEN [ROUNDS] [COHORT_BINARY]}"
rounds="${2:-2}"
cohort="${3:-build/cli/cohort}"
clients="${CLIENTS:-1}"
[[ "$clients" =~ ^[1-8]$ ]] || { echo "big_model.sh: CLIENTS must be 1-8, got $clients" >&2; exit 2; }
shift $(( $# >= 3 ? 3 : $# ))
work="$(mktemp -d /tmp/cohort-big-model-XXXXXX)"
/usr/bin/python3 - "$hidden" "$rounds" "$work/job.json" "$clients" <<'PY'
import json, sys
hidden, rounds, path, clients = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
job = {
  "job": {"name": f"mlp-{hidden}", "seed": 1},
  "model_config": {"name": "mlp", "input_shape": [1, 28, 28], "num_classes": 10, "layers": [
      {"type": "normalize", "mean": 0.286, "std": 0.353}, {"type": "flatten"},
      {"type": "linear", "out_features": hidden}, {"type": "relu"},
      {"type": "linear", "out_features": hidden}, {"type": "relu"},
      {"type": "linear", "out_features": 10}]},
  "training_config": {"optimizer": "sgd", "learning_rate": 0.001, "momentum": 0.0, "batch_size": 32,
                      "local_epochs": 1, "threads": 2},
  "federation": {"rounds": rounds, "clients_per_round": clients, "min_clients": clients, "round_timeout_s": 3600,
                 "heartbeat_timeout_s": 600, "strategy": "fedavg"},
  "data": {"dataset": "fashion-mnist", "path": "/usr/share/datasets/fashion-mnist", "partition": "iid",
           "eval_fraction": 0.2, "train_subset": 80 * clients},
  "evaluation": {"test_data": "/usr/share/datasets/fashion-mnist", "max_samples": 200},
}
json.dump(job, open(path, "w"), indent=2)
params = 784 * hidden + hidden + hidden * hidden + hidden + hidden * 10 + 10
print(f"MLP 784-{hidden}-{hidden}-10: {params:,} parameters, {params * 4 / 1e9:.2f} GB of float32")
PY
"$cohort" run "$work/job.json" --out "$work/out" --clients "$clients" "$@" > "$work/run.log" 2>&1 || {
  echo "cohort run failed:"; tail -20 "$work/run.log"; exit 1; }
# Each process logs its peak resident memory (getrusage's ru_maxrss) as it exits.
grep -H "peak resident memory" "$work/out/logs/server.log" "$work/out/logs"/site-*.log | sed 's/^.*logs\/\([^:]*\)\.log:.*\] /\1: /'
/usr/bin/python3 - "$work/out/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for r in summary["rounds"]:
    phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phase_seconds"].items())
    trained = ", ".join(f"{c['train_seconds']:.1f}" for c in r["clients"])
    print(f"round {r['round']}: {r['wall_seconds']:.1f} s ({phases}); sites trained {trained} s; "
          f"test accuracy {100 * r.get('test_accuracy', 0):.1f}%")
PY
grep -E "serving on|joined with" "$work/out/logs/server.log" | sed 's/^/  /'
echo "outputs: $work"
