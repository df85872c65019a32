"""What the LoRA benchmarks read back from a `cohort run` output directory.

Wire bytes per round: every update as its client wrote it (the clients' "update sent: N
bytes for P parameters" log lines) plus each reporting site's download of the federated
model (4 bytes per float32 parameter, sealed in chunks; the chunk overhead is under 0.1%),
divided by the rounds. Used by fortunes_lora.sh and fortunes_classify_lora.sh.
"""
import glob
import json
import re

_UPDATE_SENT = re.compile(r"round=(\d+) site=\S+ update sent: (\d+) bytes for (\d+) parameters")


def read_run(run_dir):
    """Returns the run's rounds (summary.json), federated parameters and wire bytes per round."""
    rounds = json.load(open(f"{run_dir}/summary.json"))["rounds"]
    uploaded = params = updates = 0
    for log in glob.glob(f"{run_dir}/logs/site-*.log"):
        for m in _UPDATE_SENT.finditer(open(log, errors="replace").read()):
            uploaded += int(m.group(2))
            params = int(m.group(3))
            updates += 1
    return {
        "rounds": rounds,
        "federated_parameters": params,
        "wire_bytes_per_round": (uploaded + updates * 4 * params) / max(1, len(rounds)),
    }
