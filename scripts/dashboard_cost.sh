#!/usr/bin/env bash
# What watching a job costs: runs the same `cohort run` twice, once with the dashboard's
# /api/state polled every 2 s and /metrics scraped every second, once with nothing
# watching, and prints each run's mean round wall time (summary.json "wall_seconds") and
# their ratio (docs/operability.md, "What serving costs").
#
#   scripts/dashboard_cost.sh [COHORT_BINARY] [JOB] [extra `cohort run` flags...]
#   scripts/dashboard_cost.sh build/cli/cohort configs/fashion_mnist_cnn_iid.json --rounds 3
#
# Runs the watched run first, then the unwatched one; on a loaded machine repeat it and
# compare the ratios, not single runs.
set -euo pipefail
cohort="${1:-build/cli/cohort}"
job="${2:-configs/fashion_mnist_cnn_iid.json}"
shift $(( $# >= 2 ? 2 : $# ))
work="$(mktemp -d /tmp/cohort-dashboard-cost-XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

mean_round_seconds() {
  /usr/bin/python3 -c 'import json,sys
rounds = json.load(open(sys.argv[1]))["rounds"]
print("%.3f" % (sum(r["wall_seconds"] for r in rounds) / len(rounds)))' "$1"
}

# The watched run: poll while `cohort run` prints its dashboard address.
"$cohort" run "$job" --out "$work/watched" "$@" > "$work/watched.log" 2>&1 &
run=$!
address=""
for _ in $(seq 600); do
  address="$(grep -o 'dashboard: http://127.0.0.1:[0-9]*/' "$work/watched.log" | head -1 | sed 's/dashboard: //')" || true
  [ -n "$address" ] && break
  sleep 0.1
done
if [ -z "$address" ]; then echo "no dashboard address in $work/watched.log" >&2; exit 1; fi
scrapes=0
polls=0
tick=0
while kill -0 "$run" 2>/dev/null; do
  curl -s -o /dev/null "${address}metrics" && scrapes=$((scrapes + 1)) || true
  if (( tick % 2 == 0 )); then curl -s -o /dev/null "${address}api/state" && polls=$((polls + 1)) || true; fi
  tick=$((tick + 1))
  sleep 1
done
wait "$run"

"$cohort" run "$job" --out "$work/unwatched" "$@" > "$work/unwatched.log" 2>&1

watched="$(mean_round_seconds "$work/watched/summary.json")"
unwatched="$(mean_round_seconds "$work/unwatched/summary.json")"
echo "watched:   mean round ${watched} s (${scrapes} /metrics scrapes, ${polls} /api/state polls)"
echo "unwatched: mean round ${unwatched} s"
/usr/bin/python3 -c "import sys; print('ratio watched/unwatched: %.4f' % (float(sys.argv[1]) / float(sys.argv[2])))" \
  "$watched" "$unwatched"
echo "outputs in $work"
