#!/usr/bin/env bash
# The live dashboard's picture (docs/images/dashboard.png, shown in the README): runs a
# short real job, the Fashion-MNIST CNN on three sites for eight rounds on half of the
# training set, and once three rounds have completed, while the next ones run, takes a
# screenshot of its dashboard with headless Chromium (which takes a few seconds itself).
# The job is stopped once the picture is taken.
#
#   scripts/screenshot_dashboard.sh [COHORT_BINARY] [PNG]
#   scripts/screenshot_dashboard.sh build/cli/cohort docs/images/dashboard.png
set -euo pipefail
cohort="${1:-build/cli/cohort}"
png="${2:-docs/images/dashboard.png}"
rounds_before_shot=3
if ! command -v chromium >/dev/null; then
  echo "chromium is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
if [ ! -x "$cohort" ]; then
  echo "no cohort binary at $cohort: build it (ninja -C build cohort) or pass its path" >&2
  exit 1
fi
work="$(mktemp -d /tmp/cohort-dashboard-shot-XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

"$cohort" run configs/fashion_mnist_cnn_iid.json --rounds 8 --clients 3 --train-subset 30000 \
  --out "$work/run" > "$work/run.log" 2>&1 &
run=$!

# The run's lines: "dashboard: http://127.0.0.1:PORT/  ..." at start, "round   N/8  clients ..." per round.
address=""
for _ in $(seq 600); do
  address="$(grep -o 'dashboard: http://127.0.0.1:[0-9]*/' "$work/run.log" | head -1 | sed 's/dashboard: //')" || true
  [ -n "$address" ] && break
  sleep 0.1
done
if [ -z "$address" ]; then echo "no dashboard address in $work/run.log" >&2; exit 1; fi
until grep -q "^round +${rounds_before_shot}/" -E "$work/run.log"; do
  if ! kill -0 "$run" 2>/dev/null; then echo "the job ended early; see $work/run.log" >&2; exit 1; fi
  sleep 0.5
done
# A moment into the next round, so that its sites show their phases.
sleep 2

mkdir -p "$(dirname "$png")"
# Virtual time: the page polls /api/state and draws before the picture is taken.
timeout 60 chromium --headless --no-sandbox --disable-gpu --no-proxy-server --no-first-run --hide-scrollbars \
  --user-data-dir="$work/chromium-profile" --window-size=1280,1600 --virtual-time-budget=5000 \
  --screenshot="$(realpath -m "$png")" "$address" 2>/dev/null
echo "wrote $png (run outputs and log in $work)"
