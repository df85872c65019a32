#!/usr/bin/env bash
# A federated language model on the fortunes text, against the same model trained centrally,
# and LoRA fine-tuning of it against full fine-tuning, all through `cohort run` in one window:
#
#   1. federated: configs/fortunes_lm.json, 4 sites, one fortunes category each (non-IID).
#   2. central:   the same model and settings, one site holding all four categories, with
#                 as many optimizer steps as the four sites together (4 x max_steps).
#   3. full:      configs/fortunes_finetune.json from (1)'s model (--initial-model): every
#                 weight trained on four other categories, one per site.
#   4. lora:      configs/fortunes_lora.json on the same base and data: only the adapters.
#   5. base:      the base model itself on the fine-tuning text: (3) for one step at a
#                 learning rate of 1e-12, so that its one round evaluates the base unchanged.
#                 What fine-tuning gained is measured from here.
#
# Wire bytes per round come from the clients' logs ("update sent: N bytes", every message
# of the update) plus what each site downloads (the federated model's bytes, from the same
# line's parameter count); accuracy and perplexity from the server's evaluation of the last
# round on the held-out text of the job's files (summary.json; perplexity = exp(test_loss)).
#
# Targets: LoRA with at least 20x fewer wire bytes per round than full fine-tuning, and a
# final next-token accuracy within 1 point of it. Exits 1 when either is missed.
#
# --base PATH: fine-tune this model.pt (same model_config as the jobs, after --set) instead
# of (1)'s model, and skip (1) and (2). For a base pretrained on more text than four
# categories: configs/fortunes_pretrain.json, one site holding the other 39 categories.
#
#   bench/lora/fortunes_lora.sh [--cohort PATH] [--out DIR] [--quick] [--base PATH] [--set [JOB:]KEY=JSON]...
# Defaults: build/cli/cohort, runs/lora-bench. --quick: 2 rounds each and fewer steps, to
# check that the script works (not a measurement). --set changes one key of the job files
# after they are read from configs/: KEY is a dotted path (model_config.hidden_size,
# model_config.lora.rank, training_config.learning_rate), JSON its new value, and JOB one of
# federated, central, full, lora, base (default: every job that has the key's section), e.g.
#   --set model_config.hidden_size=128 --set model_config.intermediate_size=512
#   --set lora:model_config.lora.rank=4
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cohort="$root/build/cli/cohort"
out="$root/runs/lora-bench"
quick=0
base_model=""
sets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cohort) cohort="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --base) base_model="$(realpath -m "$2")"; shift 2 ;;
    --set) sets+=("$2"); shift 2 ;;
    *) echo "fortunes_lora.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$cohort" ]] || { echo "fortunes_lora.sh: no cohort binary at $cohort (build it, or pass --cohort)" >&2; exit 2; }
[[ -z "$base_model" || -f "$base_model" ]] || { echo "fortunes_lora.sh: --base $base_model: no such file" >&2; exit 2; }
[[ -d /usr/share/games/fortunes ]] || { echo "fortunes_lora.sh: install the fortunes package" >&2; exit 2; }
mkdir -p "$out"
py=/usr/bin/python3

# The four job files, from the shipped configs (only names, steps and paths change).
# Without --base, (1) trains the base and (2) is its central comparison.
lm_runs=""
[[ -n "$base_model" ]] || { lm_runs="federated central"; base_model="$out/federated/model.pt"; }
"$py" - "$root" "$out" "$quick" "$base_model" "${sets[@]}" <<'PY'
import json, sys
root, out, quick, base_model = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
overrides = []
for arg in sys.argv[5:]:
    head, eq, value = arg.partition("=")
    target, _, key = head.rpartition(":")
    if not eq or not key:
        sys.exit(f"fortunes_lora.sh: --set {arg}: expected [JOB:]KEY=JSON")
    try:
        overrides.append((target, key.split("."), json.loads(value)))
    except json.JSONDecodeError as e:
        sys.exit(f"fortunes_lora.sh: --set {arg}: the value is not JSON ({e}); quote strings as '\"text\"'")
def apply_overrides(config, name):
    for target, path, value in overrides:
        if target and target != name:
            continue
        node = config
        for part in path[:-1]:
            if part not in node:
                node = None
                break
            node = node[part]
        if node is None:
            if target:
                sys.exit(f"fortunes_lora.sh: --set {target}:{'.'.join(path)}: the {name} job has no {'.'.join(path[:-1])}")
            continue
        node[path[-1]] = value
def load(name):
    return json.load(open(f"{root}/configs/{name}"))
def save(config, name):
    apply_overrides(config, name)
    if quick:
        config["federation"]["rounds"] = 2
        config["training_config"]["max_steps"] = min(config["training_config"]["max_steps"], 40)
        config["training_config"]["warmup_steps"] = 0
    json.dump(config, open(f"{out}/{name}.json", "w"), indent=2)
federated = load("fortunes_lm.json")
save(federated, "federated")
central = load("fortunes_lm.json")
central["job"]["name"] = "fortunes-lm-central"
central["federation"].update({"clients_per_round": 1, "min_clients": 1})
central["training_config"]["max_steps"] *= 4
central["training_config"]["warmup_steps"] *= 4
if quick:
    central["training_config"]["max_steps"] = 160
save(central, "central")
save(load("fortunes_finetune.json"), "full")
base = load("fortunes_finetune.json")
base["job"]["name"] = "fortunes-base-on-finetune-text"
base["federation"]["rounds"] = 1
apply_overrides(base, "base")
base["training_config"].update({"learning_rate": 1e-12, "min_learning_rate": 1e-12, "max_steps": 1})
json.dump(base, open(f"{out}/base.json", "w"), indent=2)
lora = load("fortunes_lora.json")
lora["model_config"]["lora"]["base_model"] = base_model
save(lora, "lora")
PY

run() {  # run NAME [extra cohort run flags...]
  local name="$1"; shift
  echo "== $name" >&2
  rm -rf "$out/$name"
  local start; start=$(date +%s)
  "$cohort" run "$out/$name.json" --out "$out/$name" "$@" > "$out/$name.stdout" 2>&1 ||
    { echo "fortunes_lora.sh: the $name run failed; see $out/$name.stdout" >&2; exit 1; }
  echo "$(( $(date +%s) - start ))" > "$out/$name.seconds"
  tail -n 2 "$out/$name.stdout" >&2
}
if [[ -n "$lm_runs" ]]; then
  run federated
  run central --clients 1
else
  rm -rf "$out/federated" "$out/central"
fi
run full --initial-model "$base_model"
run lora
run base --initial-model "$base_model"

"$py" - "$out" "$root/bench/lora" $lm_runs <<'PY'
import json, math, sys
out = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from lora_runs import read_run
result = {}
for name in sys.argv[3:] + ["full", "lora", "base"]:
    run = read_run(f"{out}/{name}")
    rounds = run["rounds"]
    last = rounds[-1]
    result[name] = {
        "rounds": len(rounds),
        "federated_parameters": run["federated_parameters"],
        "wire_bytes_per_round": run["wire_bytes_per_round"],
        "test_accuracy": last["test_accuracy"],
        "test_loss": last["test_loss"],
        "perplexity": math.exp(last["test_loss"]),
        "seconds": int(open(f"{out}/{name}.seconds").read()),
    }
print(f"{'run':10} {'rounds':>6} {'params':>8} {'wire B/round':>13} {'next-token acc':>14} {'perplexity':>10} {'s':>5}")
for name, r in result.items():
    print(f"{name:10} {r['rounds']:6d} {r['federated_parameters']:8d} {r['wire_bytes_per_round']:13.0f} "
          f"{100 * r['test_accuracy']:13.2f}% {r['perplexity']:10.3f} {r['seconds']:5d}")
full, lora, base = result["full"], result["lora"], result["base"]
ratio = full["wire_bytes_per_round"] / lora["wire_bytes_per_round"]
gap = 100 * (lora["test_accuracy"] - full["test_accuracy"])
for name in ("full", "lora"):
    gain = 100 * (result[name]["test_accuracy"] - base["test_accuracy"])
    print(f"{name}: {gain:+.2f} points of next-token accuracy over the base model on the fine-tuning text")
fed_gap = None
if "federated" in result:
    fed_gap = 100 * (result["federated"]["test_accuracy"] - result["central"]["test_accuracy"])
    print(f"federated - central: {fed_gap:+.2f} points of next-token accuracy")
print(f"lora: {ratio:.1f}x fewer wire bytes per round than full fine-tuning, {gap:+.2f} points of accuracy")
json.dump({"results": result, "lora_wire_ratio": ratio, "lora_accuracy_gap_points": gap,
           "federated_minus_central_points": fed_gap}, open(f"{out}/result.json", "w"), indent=2)
ok = ratio >= 20 and gap >= -1.0
print("targets (>= 20x fewer bytes, within 1 point):", "met" if ok else "MISSED")
sys.exit(0 if ok else 1)
PY
