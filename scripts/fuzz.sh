#!/usr/bin/env bash
# Fuzzes every libFuzzer target in fuzz/ for a given time (docs/reliability.md, "Fuzzing").
#
#   scripts/fuzz.sh SECONDS [JOBS] [TARGET...]
#
# Builds the targets with clang 14 (ASan + UBSan + libFuzzer) into build-fuzz/ (or
# $COHORT_FUZZ_BUILD_DIR), installing clang-14 and its runtimes with apt-get when they are
# missing, then runs each target for SECONDS, JOBS at a time (default 2), niced. Each
# target starts from its seeds in fuzz/corpus/<target>/ plus what earlier runs found;
# new corpus entries go to build-fuzz/fuzz-runs/<target>/corpus/ and crashes, leaks,
# timeouts and out-of-memory inputs to build-fuzz/fuzz-runs/<target>/artifacts/. Prints,
# per target, executions, coverage (cov, ft), corpus size and the verdict; exits 1 when
# any target found something, 0 when all ran clean.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh SECONDS [JOBS] [TARGET...]   e.g. scripts/fuzz.sh 600 2" >&2
  exit 2
fi
seconds="$1"
jobs="${2:-2}"
shift $(($# >= 2 ? 2 : 1))
all_targets=(job_config_fuzzer checkpoint_fuzzer update_receiver_fuzzer compressed_chunk_fuzzer audit_log_fuzzer
             privacy_ledger_fuzzer idx_reader_fuzzer csv_reader_fuzzer)
[[ $# -gt 0 ]] && targets=("$@") || targets=("${all_targets[@]}")
build="${COHORT_FUZZ_BUILD_DIR:-$root/build-fuzz}"

# ---- toolchain ------------------------------------------------------------------------
if ! command -v clang++-14 >/dev/null || ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz.sh: installing clang-14, libfuzzer-14-dev, libclang-rt-14-dev" >&2
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq clang-14 libfuzzer-14-dev libclang-rt-14-dev >/dev/null
fi

# ---- build ----------------------------------------------------------------------------
export CCACHE_BASEDIR="$root"
if [[ ! -f "$build/build.ninja" ]]; then
  # -O1 with line tables: compiles faster than -O2 -g under the sanitizers and still
  # symbolizes every frame; assertions stay on, since a failed one is a finding.
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
    -DCOHORT_BUILD_FUZZERS=ON -DCOHORT_BUILD_TESTS=OFF -DCOHORT_BUILD_BENCH=OFF >/dev/null
fi
# COHORT_FUZZ_SKIP_BUILD=1: run the binaries already built (another build of the same
# directory is under way).
if [[ "${COHORT_FUZZ_SKIP_BUILD:-}" != 1 ]]; then
  nice -n 10 ninja -C "$build" -j "${COHORT_BUILD_JOBS:-2}" "${targets[@]}" >/dev/null
fi

# ---- run ------------------------------------------------------------------------------
runs="$build/fuzz-runs"
scratch="$(mktemp -d "${COHORT_FUZZ_TMPDIR:-/dev/shm}/cohort-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# Leaks are findings; UB stops the run like a memory error (the build also makes it
# non-recoverable).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

run_one() {
  local target="$1" dir="$runs/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a reader that
  # allocates past 2 GiB for an input of at most 64 KiB is a finding; -max_len: inputs
  # long enough for several chunks, lines and tensors.
  TMPDIR="$scratch" nice -n 10 "$build/fuzz/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
    "$dir/corpus" "$root/fuzz/corpus/$target" >"$dir/log.txt" 2>&1
}

for target in "${targets[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
  echo "fuzz.sh: $target for ${seconds}s" >&2
  run_one "$target" &
done
wait || true

# ---- report ---------------------------------------------------------------------------
status=0
printf '%-24s %12s %8s %8s %16s  %s\n' target executions cov ft 'corpus (inputs)' verdict
for target in "${targets[@]}"; do
  log="$runs/$target/log.txt"
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
  [[ -z "$done_line" ]] && done_line="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
  execs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}' | tail -1 || true)"
  cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")"
  ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")"
  corpus="$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")"
  if grep -qE '^==[0-9]+==ERROR|^SUMMARY: |fuzz property failed|ERROR: libFuzzer' "$log"; then
    verdict="FOUND: $(grep -m1 -E 'SUMMARY: |fuzz property failed|ERROR: libFuzzer' "$log") (see $runs/$target/)"
    status=1
  else
    verdict="clean"
  fi
  printf '%-24s %12s %8s %8s %16s  %s\n' "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$verdict"
done
exit "$status"
