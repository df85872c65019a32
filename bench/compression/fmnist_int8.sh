#!/usr/bin/env bash
# INT8 updates against uncompressed ones on the Fashion-MNIST CNN, 4 IID sites, in the
# same window: configs/fashion_mnist_cnn_iid.json run twice through `cohort run`, once as
# it is and once with "federation.compression": {"method": "int8"}, back to back.
#
# Bytes per parameter come from what the clients wrote: each client logs, for every
# accepted update, the bytes of the messages it sent (header and sealed chunks, before
# gRPC's framing) and the number of parameters (client/agent.cc, "update sent: ..."). The
# accuracy is the server's test accuracy after the last round (OUT/summary.json).
#
# Targets (issue 17): at most 1.05 bytes per parameter with int8, and a final accuracy
# within 0.5 point of the uncompressed run. Exits 1 when either is missed.
#
#   bench/compression/fmnist_int8.sh [--cohort PATH] [--rounds N] [--train-subset N] [--out DIR]
# Defaults: build/cli/cohort, 20 rounds, all rows, runs/compression-int8.
# A short proof that it works (not a measurement): --rounds 2 --train-subset 4000.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cohort="$root/build/cli/cohort"
rounds=20
subset=0
out="$root/runs/compression-int8"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cohort) cohort="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --train-subset) subset="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "fmnist_int8.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$cohort" ]] || { echo "fmnist_int8.sh: no cohort binary at $cohort (build it, or pass --cohort)" >&2; exit 2; }
mkdir -p "$out"

# Python's json module only edits the JSON; /usr/bin/python3 is Debian's (docs/README).
py=/usr/bin/python3
base="$root/configs/fashion_mnist_cnn_iid.json"
for method in none int8; do
  "$py" - "$base" "$out/$method.json" "$method" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["job"]["name"] = "fmnist-cnn-iid-" + sys.argv[3]
config["federation"]["clients_per_round"] = 4
config["federation"]["min_clients"] = 4
if sys.argv[3] != "none":
    config["federation"]["compression"] = {"method": sys.argv[3]}
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY
done

for method in none int8; do
  echo "== $method: $rounds rounds, 4 IID sites" >&2
  rm -rf "$out/$method"
  start=$(date +%s)
  "$cohort" run "$out/$method.json" --clients 4 --rounds "$rounds" --train-subset "$subset" --out "$out/$method" \
    > "$out/$method.stdout" 2>&1 || { echo "fmnist_int8.sh: the $method run failed; see $out/$method.stdout" >&2; exit 1; }
  echo "$(( $(date +%s) - start ))" > "$out/$method.seconds"
done

"$py" - "$out" <<'PY'
import glob, json, re, sys
out = sys.argv[1]
line = re.compile(r"update sent: (\d+) bytes for (\d+) parameters")
result = {}
for method in ("none", "int8"):
    sent = params = updates = 0
    for log in glob.glob(f"{out}/{method}/logs/site-*.log"):
        for m in line.finditer(open(log, errors="replace").read()):
            sent += int(m.group(1)); params += int(m.group(2)); updates += 1
    summary = json.load(open(f"{out}/{method}/summary.json"))
    last = summary["rounds"][-1]
    result[method] = {
        "updates": updates,
        "bytes_per_parameter": sent / params if params else float("nan"),
        "final_test_accuracy": last.get("test_accuracy"),
        "rounds": len(summary["rounds"]),
        "seconds": int(open(f"{out}/{method}.seconds").read()),
    }
none, int8 = result["none"], result["int8"]
gap = 100 * (int8["final_test_accuracy"] - none["final_test_accuracy"])
print(f"{'method':8} {'rounds':>6} {'updates':>7} {'bytes/param':>11} {'test acc':>9} {'seconds':>7}")
for m, r in result.items():
    print(f"{m:8} {r['rounds']:6d} {r['updates']:7d} {r['bytes_per_parameter']:11.4f} "
          f"{100 * r['final_test_accuracy']:8.2f}% {r['seconds']:7d}")
print(f"int8 - none: {gap:+.2f} points; wire bytes {int8['bytes_per_parameter'] / none['bytes_per_parameter']:.3f}x")
json.dump({"results": result, "accuracy_gap_points": gap}, open(f"{out}/result.json", "w"), indent=2)
ok = int8["bytes_per_parameter"] <= 1.05 and abs(gap) <= 0.5 and int8["updates"] > 0
print("targets (<= 1.05 bytes/param, within 0.5 point):", "met" if ok else "MISSED")
sys.exit(0 if ok else 1)
PY
