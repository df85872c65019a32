#!/usr/bin/env bash
# Soak: a long job through `cohort run` (one server and K client processes over mutual TLS)
# with a small model and little data per client, so that a round takes about a second,
# sampling the server process four times a second (so every round at least once): its resident memory (VmRSS of
# /proc/PID/status), its open file descriptors (/proc/PID/fd) and the files in OUT/spool.
#
#   scripts/soak.sh [OUT] [ROUNDS] [CLIENTS]        defaults: build/soak 200 8
#   COHORT_BIN=build/cli/cohort                     the binary to run
#   COHORT_SOAK_HIDDEN=16                           hidden units of the MLP (the model's size)
#
# Verdict, over the rounds after the warm-up (the first ROUNDS/4): memory is flat when the
# least-squares slope of RSS against round is under COHORT_SOAK_MAX_KIB_PER_ROUND (16 KiB
# per round: 3 MiB over 200 rounds), and descriptors are flat when their count never
# varies by more than COHORT_SOAK_FD_SLACK (2: a file open for a moment while a round is
# written). The last round, in which the clients hang up, is left out of both. Also
# required: the job finished, and OUT/spool is empty at the end. Writes OUT/soak.tsv (every
# sample) and prints a table every 20 rounds and the verdict; exit 0 only when all hold.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/build/soak}"
rounds="${2:-200}"
clients="${3:-8}"
bin="${COHORT_BIN:-$repo/build/cli/cohort}"
max_kib_per_round="${COHORT_SOAK_MAX_KIB_PER_ROUND:-16}"
fd_slack="${COHORT_SOAK_FD_SLACK:-2}"
data="${COHORT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
hidden="${COHORT_SOAK_HIDDEN:-16}"

[[ -x "$bin" ]] || { echo "soak: no cohort binary at $bin (build it, or set COHORT_BIN)" >&2; exit 2; }
[[ -d "$data" ]] || { echo "soak: no Fashion-MNIST in $data (set COHORT_FASHION_MNIST_DIR)" >&2; exit 2; }
rm -rf "$out"
mkdir -p "$out"

# 300 training rows per client and a small MLP (16 hidden units: 51 KB): a round is mostly
# the protocol.
cat > "$out/soak_job.json" <<EOF
{
  "job": {"name": "soak", "seed": 7},
  "model_config": {"name": "mlp", "input_shape": [1, 28, 28], "num_classes": 10,
    "layers": [{"type": "normalize", "mean": 0.286, "std": 0.353}, {"type": "flatten"},
               {"type": "linear", "out_features": $hidden}, {"type": "relu"},
               {"type": "linear", "out_features": 10}]},
  "training_config": {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "batch_size": 64,
    "local_epochs": 1, "threads": 1},
  "federation": {"rounds": $rounds, "clients_per_round": $clients, "min_clients": $clients,
    "round_timeout_s": 120, "heartbeat_timeout_s": 20, "strategy": "fedavg"},
  "data": {"dataset": "fashion-mnist", "path": "$data", "partition": "iid", "eval_fraction": 0.1,
    "train_subset": $((clients * 300))}
}
EOF

run_out="$out/run"
"$bin" run "$out/soak_job.json" --clients "$clients" --out "$run_out" > "$out/run.log" 2>&1 &
run_pid=$!
cleanup() { kill "$run_pid" 2>/dev/null || true; }
trap cleanup EXIT

# The server is the child of `cohort run` whose arguments start "server".
server_pid=""
for _ in $(seq 1 300); do
  server_pid="$(ps -o pid=,args= --ppid "$run_pid" 2>/dev/null | awk '$3 == "server" {print $1; exit}' || true)"
  [[ -n "$server_pid" ]] && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.2
done
[[ -n "$server_pid" ]] || { echo "soak: the server did not start; see $out/run.log" >&2; cat "$out/run.log" >&2; exit 1; }
echo "soak: $rounds rounds, $clients clients, server pid $server_pid, output in $out"

log="$run_out/logs/server.log"
printf 'seconds\tround\trss_kib\tfds\tspool_files\n' > "$out/soak.tsv"
start=$SECONDS
while kill -0 "$server_pid" 2>/dev/null; do
  rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || true)"
  fds="$(ls "/proc/$server_pid/fd" 2>/dev/null | wc -l || true)"
  round="$(tail -n 200 "$log" 2>/dev/null | grep -o 'round=[0-9]*/[0-9]* started' | tail -1 | sed 's/round=\([0-9]*\).*/\1/' || true)"
  spool="$(ls "$run_out/spool" 2>/dev/null | wc -l || true)"
  [[ -n "$rss" ]] && printf '%s\t%s\t%s\t%s\t%s\n' "$((SECONDS - start))" "${round:-0}" "$rss" "$fds" "$spool" >> "$out/soak.tsv"
  sleep 0.25  # rounds of this job take well under a second: sample every round
done
wait "$run_pid" && run_status=0 || run_status=$?
trap - EXIT

finished=no
grep -q "finished" "$out/run.log" && [[ $run_status == 0 ]] && finished=yes
left="$(find "$run_out/spool" -type f 2>/dev/null | wc -l)"

# The curve: a sample every 20 rounds (and the last), then the verdict.
awk -F'\t' -v rounds="$rounds" -v max_slope="$max_kib_per_round" -v slack="$fd_slack" '
  NR == 1 { next }
  { r = $2 + 0 }
  r > 0 && !(r in seen) { seen[r] = 1; rss[r] = $3; fds[r] = $4; if (r > last) last = r }
  END {
    print "| round | server RSS (MiB) | open fds |"
    print "| ---: | ---: | ---: |"
    # The first sampled round at or after 1, 20, 40, ... (a loaded machine samples less often).
    for (m = 0; m <= last; m += 20) {
      for (r = (m == 0 ? 1 : m); r <= last && !(r in seen); r++) {}
      if (r <= last && !(r in shown)) { shown[r] = 1; printf "| %d | %.1f | %d |\n", r, rss[r] / 1024, fds[r] }
    }
    if (!(last in shown)) printf "| %d | %.1f | %d |\n", last, rss[last] / 1024, fds[last]
    # The last round is left out: the job ends in it and the clients hang up.
    warm = int(rounds / 4); n = 0; sx = sy = sxx = sxy = 0; min_fd = -1; max_fd = -1
    for (r = warm + 1; r < last; r++) if (r in seen) {
      n++; sx += r; sy += rss[r]; sxx += r * r; sxy += r * rss[r]
      if (min_fd < 0 || fds[r] < min_fd) min_fd = fds[r]
      if (fds[r] > max_fd) max_fd = fds[r]
    }
    if (n < 2) { print "verdict: too few rounds sampled after the warm-up"; exit 1 }
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    mem_ok = slope < max_slope
    fd_ok = max_fd <= min_fd + slack
    printf "after the warm-up (rounds %d-%d, %d rounds sampled): RSS slope %.2f KiB/round (limit %s), fds between %d and %d (slack %d)\n", warm + 1, last - 1, n, slope, max_slope, min_fd, max_fd, slack
    printf "memory %s, descriptors %s\n", mem_ok ? "flat" : "GROWING", fd_ok ? "flat" : "GROWING"
    exit !(mem_ok && fd_ok)
  }' "$out/soak.tsv" | tee "$out/verdict.txt" && flat=yes || flat=no

echo "job finished: $finished (cohort run exit $run_status); spool files left: $left" | tee -a "$out/verdict.txt"
if [[ $flat == yes && $finished == yes && $left == 0 ]]; then
  echo "soak: PASS" | tee -a "$out/verdict.txt"
  exit 0
fi
echo "soak: FAIL (see $out/run.log and $run_out/logs/)" | tee -a "$out/verdict.txt"
exit 1
