#!/usr/bin/env python3
"""Chaos check of a horizontal federation (docs/reliability.md, "Chaos").

Runs a real `cohort server` and 20 real `cohort client` processes on loopback for a
10-round DP-SGD job, and meanwhile, from an RNG seeded with SEED (printed; argument or
COHORT_CHAOS_SEED), SIGKILLs and restarts random clients and the server at random moments,
and SIGKILLs the server at least twice while it writes OUT/checkpoint.bin (an inotify watch
on OUT/ sees the checkpoint's temporary file appear). A restarted server resumes on the
same --out and --state; a restarted client rejoins with the same site name and ledger.

Then it checks, and exits 1 if any check fails:
  - summary.json says finished, with every round;
  - `cohort audit verify` passes, with exactly one model.publish per model version;
  - no site ledger, server mirror ledger or audit log charges a (site, round) twice;
  - the final model equals, within 1e-4, the fault-free replay of the same participants
    per round (tests/chaos/chaos_reference.cc).

Usage: scripts/chaos.py [SEED]  (binaries from $COHORT_BUILD_DIR, default build/)
Environment: COHORT_CHAOS_CLIENTS (20), COHORT_CHAOS_ROUNDS (10), COHORT_CHAOS_KEEP=1 keeps
the run directory /tmp/cohort-chaos-* even on success.
"""
import collections
import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(os.environ.get("COHORT_BUILD_DIR", os.path.join(REPO, "build")))
COHORT = os.path.join(BUILD, "cli", "cohort")
REFERENCE = os.path.join(BUILD, "tests", "chaos", "cohort_chaos_reference")
DATA = "/usr/share/datasets/fashion-mnist"

CLIENTS = int(os.environ.get("COHORT_CHAOS_CLIENTS", "20"))
ROUNDS = int(os.environ.get("COHORT_CHAOS_ROUNDS", "10"))
ROWS_PER_CLIENT = 300
JOB_SEED = 7             # the job's seed: data shards, initial model, training seeds
DP_SEED_BASE = 1000      # site i draws DP-SGD noise from seed DP_SEED_BASE + i
TOLERANCE = 1e-4
SERVER_KILLS = 2          # at random moments
CHECKPOINT_KILLS = 2      # while OUT/checkpoint.bin is being written
CLIENT_KILLS = 10         # each of 1 to 3 clients
DEADLINE_S = 1500         # the whole federation, kills included


def log(message):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    """A free port below the kernel's ephemeral range. The server restarts on the same port
    while its clients keep reconnecting to it; with the port inside the ephemeral range, a
    client's connect to the dead port can be given that very port as its source and connect
    to itself (TCP simultaneous open), and the restarted server then fails to bind it
    ("Address already in use"): the likely cause of one chaos run's stop."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low = max(1024, min(20000, ephemeral_low - 2000))
    for port in random.Random().sample(range(low, ephemeral_low), min(200, ephemeral_low - low)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in [{low}, {ephemeral_low}) for the chaos server")


class CheckpointWatch:
    """inotify on OUT/: reports the moment a checkpoint's temporary file is created."""

    IN_CREATE = 0x100
    IN_NONBLOCK = 0o4000

    def __init__(self, directory):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, directory.encode(), self.IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def created_checkpoint_temp(self, timeout):
        """True when a .checkpoint.bin.tmp-* file was created within `timeout` seconds."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        offset = 0
        found = False
        while offset + 16 <= len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode(errors="replace")
            offset += 16 + length
            found = found or name.startswith(".checkpoint.bin.tmp")
        return found

    def drain(self):
        while self.created_checkpoint_temp(0):
            pass


class Federation:
    def __init__(self, root, seed):
        self.root = root
        self.out = os.path.join(root, "out")
        self.state = os.path.join(root, "server-state")
        self.logs = os.path.join(root, "logs")
        os.makedirs(self.out)
        os.makedirs(self.logs)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.job_path = os.path.join(root, "job.json")
        self.write_job()
        self.server = None
        self.server_starts = 0
        self.clients = {}          # site -> Popen
        self.client_starts = collections.Counter()
        self.rng = random.Random(seed)

    def write_job(self):
        with open(os.path.join(REPO, "configs", "fashion_mnist_mlp_iid.json")) as f:
            model = json.load(f)["model_config"]
        job = {
            "job": {"name": "chaos", "seed": JOB_SEED},
            "model_config": model,
            "training_config": {"optimizer": "sgd", "learning_rate": 0.5, "momentum": 0.0, "batch_size": 64,
                                "local_epochs": 1, "threads": 1},
            "federation": {"rounds": ROUNDS, "clients_per_round": CLIENTS, "min_clients": max(2, CLIENTS // 2),
                           "round_timeout_s": 60, "heartbeat_timeout_s": 6, "join_grace_s": 3,
                           "max_round_retries": 20},
            "data": {"dataset": "fashion-mnist", "path": DATA, "partition": "iid", "eval_fraction": 0.1,
                     "train_subset": ROWS_PER_CLIENT * CLIENTS},
            "privacy": {"mechanism": "dp_sgd", "target_epsilon": 30.0, "target_delta": 1e-5,
                        "noise_multiplier": 0.0, "clip_norm": 1.0},
        }
        with open(self.job_path, "w") as f:
            json.dump(job, f, indent=1)

    def _spawn(self, args, log_name):
        logf = open(os.path.join(self.logs, log_name), "ab")
        # Its own process group, so that cleanup can end whatever it started.
        return subprocess.Popen([COHORT] + args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def start_server(self):
        self.server_starts += 1
        self.server = self._spawn(["server", "--insecure", "--config", self.job_path, "--listen", self.address,
                                   "--out", self.out, "--state", self.state, "--threads", "1"], "server.log")

    def start_client(self, i):
        site = f"site-{i}"
        self.client_starts[site] += 1
        self.clients[site] = self._spawn(
            ["client", "--insecure", "--server", self.address, "--site", site, "--data", DATA,
             "--shard", f"{i}/{CLIENTS}", "--seed", str(JOB_SEED), "--train-subset", str(ROWS_PER_CLIENT * CLIENTS),
             "--eval-fraction", "0.1", "--threads", "1", "--connect-timeout", "300",
             "--ledger", os.path.join(self.root, "sites", site, "privacy-ledger.jsonl"),
             "--dp-sgd-seed-for-tests", str(DP_SEED_BASE + i)], f"{site}.log")

    def kill_server(self):
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait()

    def kill_client(self, site):
        proc = self.clients.pop(site)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had just exited (the loop checks how)
        return proc.wait()

    def stop_all(self):
        procs = list(self.clients.values()) + ([self.server] if self.server else [])
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        self.clients.clear()

    def rounds_done(self):
        """Model versions published so far (summary.json is written only at the end)."""
        try:
            with open(os.path.join(self.out, "audit.log"), "rb") as f:
                return f.read().count(b'"action":"model.publish"')
        except OSError:
            return 0


def run_chaos(fed, stats):
    """Starts the federation and kills until the server finishes on its own. Raises on failure."""
    rng = fed.rng
    fed.start_server()
    for i in range(CLIENTS):
        fed.start_client(i)
    watch = CheckpointWatch(fed.out)
    plan = (["server"] * SERVER_KILLS + ["checkpoint"] * CHECKPOINT_KILLS + ["clients"] * CLIENT_KILLS)
    rng.shuffle(plan)
    # A checkpoint kill that found no write in time goes back into the plan once more.
    pending_restarts = []   # (time, site)
    started = time.monotonic()
    next_action = started + rng.uniform(4, 8)
    while True:
        now = time.monotonic()
        if now - started > DEADLINE_S:
            raise RuntimeError(f"the federation did not finish in {DEADLINE_S} s (rounds done: {fed.rounds_done()})")
        code = fed.server.poll()
        if code is not None:
            if code == 0:
                log(f"server finished on its own after {now - started:.1f} s")
                return
            raise RuntimeError(f"the server exited with {code} without being killed (see {fed.logs}/server.log)")
        for when, site in list(pending_restarts):
            if when <= now:
                pending_restarts.remove((when, site))
                fed.start_client(int(site.split("-")[1]))
                log(f"restarted {site}")
        for site, proc in list(fed.clients.items()):
            if proc.poll() is not None and proc.returncode != 0:
                raise RuntimeError(f"{site} exited with {proc.returncode} without being killed "
                                   f"(see {fed.logs}/{site}.log)")
        if plan and now >= next_action:
            action = plan.pop()
            rounds = fed.rounds_done()
            if action == "server":
                time.sleep(rng.uniform(0, 1.5))
                fed.kill_server()
                stats["server_kills"] += 1
                delay = rng.uniform(0.2, 3)
                log(f"killed the server at random (after round {rounds}); restart in {delay:.1f} s")
                time.sleep(delay)
                fed.start_server()
            elif action == "checkpoint":
                watch.drain()
                deadline = time.monotonic() + 60
                hit = False
                while time.monotonic() < deadline and fed.server.poll() is None:
                    if watch.created_checkpoint_temp(0.5):
                        hit = True
                        break
                if fed.server.poll() is not None:
                    continue  # finished meanwhile: the loop sees it
                fed.kill_server()
                stats["checkpoint_kills"] += 1
                left = [n for n in os.listdir(fed.out) if n.startswith(".checkpoint.bin.tmp")]
                if hit:
                    stats["checkpoint_hits"] += 1
                    stats["checkpoint_kills_before_rename"] += bool(left)
                    log(f"killed the server as it wrote the checkpoint of round {fed.rounds_done() + 1} "
                        f"({'temporary file left: before the rename' if left else 'after the rename'})")
                else:
                    log("no checkpoint write seen in 60 s; killed the server anyway")
                time.sleep(rng.uniform(0.2, 2))
                fed.start_server()
            else:
                live = sorted(site for site, proc in fed.clients.items() if proc.poll() is None)
                victims = rng.sample(live, min(len(live), rng.randint(1, 3)))
                for site in victims:
                    fed.kill_client(site)
                    stats["client_kills"] += 1
                    pending_restarts.append((time.monotonic() + rng.uniform(0.2, 5), site))
                log(f"killed {', '.join(victims)} (after round {rounds})")
            next_action = time.monotonic() + rng.uniform(2, 7)
        time.sleep(0.05)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check(fed, failures):
    def fail(message):
        failures.append(message)
        log("FAIL: " + message)

    summary = json.load(open(os.path.join(fed.out, "summary.json")))
    rounds = summary.get("rounds", [])
    if summary.get("status") != "finished" or len(rounds) != ROUNDS:
        fail(f"summary.json: status {summary.get('status')!r} with {len(rounds)} rounds, expected finished with {ROUNDS}")
    else:
        log(f"summary: finished, {ROUNDS} rounds; participants per round: {[len(r['clients']) for r in rounds]}")

    audit_log = os.path.join(fed.out, "audit.log")
    verify = subprocess.run([COHORT, "audit", "verify", audit_log, "--key", os.path.join(fed.out, "audit", "audit.pub")],
                            capture_output=True, text=True)
    if verify.returncode != 0:
        fail(f"cohort audit verify: exit {verify.returncode}: {verify.stdout.strip()} {verify.stderr.strip()}")
    else:
        log("cohort audit verify: " + verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else "ok")
    entries = read_jsonl(audit_log)
    publishes = collections.Counter()
    audit_spends = collections.Counter()
    for e in entries:
        value = e.get("new") if isinstance(e.get("new"), dict) else {}
        if e.get("action") == "model.publish":
            publishes[value.get("model_version")] += 1
        elif e.get("action") == "privacy.spend" and e.get("role") == "site":
            audit_spends[(e.get("actor"), value.get("round"))] += 1
    if sorted(publishes) != list(range(1, ROUNDS + 1)) or any(n != 1 for n in publishes.values()):
        fail(f"audit log: model.publish per version {dict(sorted(publishes.items()))}, expected one for each of 1..{ROUNDS}")
    else:
        log(f"audit log: exactly one model.publish for each of versions 1..{ROUNDS}")
    doubled = {k: n for k, n in audit_spends.items() if n > 1}
    if doubled:
        fail(f"audit log: privacy.spend recorded more than once for (site, round) {doubled}")

    def check_ledger(path, owner):
        spends = collections.Counter()
        for line in read_jsonl(path):
            if line.get("kind") == "spend":
                spends[(line.get("job"), line.get("round"))] += 1
        doubled = {k: n for k, n in spends.items() if n > 1}
        if doubled:
            fail(f"{owner} ledger {path}: rounds charged more than once {doubled}")
        return sum(spends.values())

    site_spends = mirror_spends = 0
    for i in range(CLIENTS):
        path = os.path.join(fed.root, "sites", f"site-{i}", "privacy-ledger.jsonl")
        if os.path.exists(path):
            site_spends += check_ledger(path, f"site-{i}")
    mirror_dir = os.path.join(fed.out, "ledgers")
    for name in sorted(os.listdir(mirror_dir)) if os.path.isdir(mirror_dir) else []:
        mirror_spends += check_ledger(os.path.join(mirror_dir, name), "server mirror")
    contributions = sum(len(r["clients"]) for r in rounds)
    if mirror_spends != contributions:
        fail(f"server mirror ledgers hold {mirror_spends} spends for {contributions} contributions in summary.json")
    log(f"ledgers: {site_spends} site spends, {mirror_spends} mirrored spends for {contributions} contributions")

    reference = subprocess.run([REFERENCE, "--job", fed.job_path, "--summary", os.path.join(fed.out, "summary.json"),
                                "--model", os.path.join(fed.out, "model.pt"), "--clients", str(CLIENTS),
                                "--dp-sgd-seed-base", str(DP_SEED_BASE), "--tolerance", str(TOLERANCE)],
                               capture_output=True, text=True)
    last = (reference.stdout.strip().splitlines() or [""])[-1]
    if reference.returncode != 0:
        fail(f"reference replay: exit {reference.returncode}: {last} {reference.stderr.strip()}")
    else:
        log(last)
    return last


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else int(
        os.environ.get("COHORT_CHAOS_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    for binary in (COHORT, REFERENCE):
        if not os.access(binary, os.X_OK):
            print(f"chaos: {binary} is missing; build it (ninja -C {BUILD} cohort cohort_chaos_reference) "
                  f"or set COHORT_BUILD_DIR", file=sys.stderr)
            return 2
    root = tempfile.mkdtemp(prefix="cohort-chaos-", dir="/tmp")
    log(f"seed {seed} (rerun: scripts/chaos.sh {seed}); {CLIENTS} clients, {ROUNDS} rounds; run directory {root}")
    fed = Federation(root, seed)
    stats = collections.Counter()
    failures = []
    started = time.monotonic()

    def on_signal(signum, _frame):
        fed.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        run_chaos(fed, stats)
        # Clients hear DONE on their next poll; any still running after that is stopped.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(p.poll() is None for p in fed.clients.values()):
            time.sleep(0.2)
    except RuntimeError as e:
        failures.append(str(e))
        log("FAIL: " + str(e))
    finally:
        fed.stop_all()
    elapsed = time.monotonic() - started
    last = check(fed, failures) if not failures else ""
    log(f"seed {seed}: {stats['server_kills']} random server kills, {stats['checkpoint_kills']} server kills aimed "
        f"at a checkpoint write ({stats['checkpoint_hits']} hit one, {stats['checkpoint_kills_before_rename']} "
        f"before its rename), {stats['client_kills']} client kills; {elapsed:.0f} s; {last}")
    if failures:
        log(f"FAILED ({len(failures)}): run directory kept: {root}")
        return 1
    if os.environ.get("COHORT_CHAOS_KEEP") == "1":
        log(f"passed; run directory kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
        log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
