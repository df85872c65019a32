#!/usr/bin/env bash
# The sanitizer builds of the test suite (docs/reliability.md, "Sanitizers"):
#
#   scripts/sanitize.sh [address|thread|all]      (default: all)
#
#   address  AddressSanitizer + UndefinedBehaviorSanitizer (gcc 12, leaks checked) build of
#            the whole suite in build-asan/, then ctest on it.
#   thread   ThreadSanitizer build of the torch-free concurrency tests (the storage, core,
#            wire and server test programs) in build-tsan/, then ctest on those.
#
# Builds are niced and run $COHORT_BUILD_JOBS (default 2) compilers at a time. Exits 0 when
# every test ran clean, 1 otherwise. UB aborts (the build makes it non-recoverable), so
# a finding fails the test that hit it, with the sanitizer's report in ctest's output.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
mode="${1:-all}"
jobs="${COHORT_BUILD_JOBS:-2}"
export CCACHE_BASEDIR="$root"

# The long checks themselves (labels fuzz, sanitize) never run inside a sanitizer build,
# and a test program that was not built in a partial build is not a failure.
common_ctest=(--output-on-failure -LE '^(fuzz|sanitize)$')

# Tests left out of the ASan run, each with its reason.
asan_excluded=(
)

run_address() {
  local build="$root/build-asan"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOHORT_SANITIZE=address \
    -DCOHORT_BUILD_BENCH=OFF >/dev/null
  nice -n 10 ninja -C "$build" -j "$jobs"
  local exclude='_NOT_BUILT$'
  for t in "${asan_excluded[@]}"; do exclude+="|^${t%% *}\$"; done
  # LibTorch and OpenBLAS are not instrumented: what they leak at exit (static
  # registries, thread pools) is theirs; scripts/sanitize/lsan.supp names it.
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
  LSAN_OPTIONS="suppressions=$root/scripts/sanitize/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    nice -n 10 ctest --test-dir "$build" -j "$jobs" "${common_ctest[@]}" -E "$exclude"
}

run_thread() {
  local build="$root/build-tsan"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOHORT_SANITIZE=thread \
    -DCOHORT_BUILD_BENCH=OFF >/dev/null
  nice -n 10 ninja -C "$build" -j "$jobs" cohort_storage_tests cohort_core_tests cohort_wire_tests cohort_server_tests
  # gRPC, abseil and OpenSSL are not instrumented: TSan cannot see the synchronization
  # inside them, so races it reports with only their frames are suppressed
  # (scripts/sanitize/tsan.supp); a race with one of our frames is reported.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/sanitize/tsan.supp" \
    nice -n 10 ctest --test-dir "$build" -j "$jobs" "${common_ctest[@]}" -E '_NOT_BUILT$'
}

status=0
case "$mode" in
  address) run_address || status=1 ;;
  thread) run_thread || status=1 ;;
  all)
    run_thread || status=1
    run_address || status=1
    ;;
  *)
    echo "usage: scripts/sanitize.sh [address|thread|all]" >&2
    exit 2
    ;;
esac
exit "$status"
