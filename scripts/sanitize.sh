#!/usr/bin/env bash
# The sanitizer builds of the test suite (docs/reliability.md, "Sanitizers"):
#
#   scripts/sanitize.sh [thread|address-core|address-torch|address|all]   (default: all)
#
#   thread         ThreadSanitizer build of the torch-free concurrency tests (the storage,
#                  core, wire (with the vertical party's reader thread) and server test
#                  programs) in build-tsan/, then ctest on those.
#   address-core   AddressSanitizer + UndefinedBehaviorSanitizer (gcc 12, leaks checked) build
#                  of the torch-free test programs in build-asan/, then ctest on those.
#   address-torch  The same build of the test programs that link LibTorch (training, client,
#                  integration) and of the `cohort` binary the integration tests start.
#   address        address-core, then address-torch: the whole suite under ASan + UBSan.
#   all            thread, then address.
#
# Only the named test programs are built (niced, $COHORT_BUILD_JOBS compilers at a time,
# default 2), and ctest runs only their tests, whatever else an earlier run left built in
# the same build directory. Exits 0 when every test ran clean, 1 otherwise. UB aborts (the
# build makes it non-recoverable), so a finding fails the test that hit it, with the
# sanitizer's report in ctest's output.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
mode="${1:-all}"
jobs="${COHORT_BUILD_JOBS:-2}"
export CCACHE_BASEDIR="$root"

thread_programs=(cohort_storage_tests cohort_core_tests cohort_wire_tests cohort_vertical_client_tests cohort_server_tests
  cohort_server_concurrency_tests)
# Together the two address lists are every test program of tests/ (the script checks).
address_core_programs=(
  cohort_storage_tests cohort_core_tests cohort_crypto_tests cohort_privacy_tests
  cohort_audit_tests cohort_observe_tests cohort_data_tests cohort_wire_tests cohort_vertical_client_tests
  cohort_server_tests cohort_server_scale_tests cohort_server_concurrency_tests cohort_server_observation_tests
  cohort_compression_tests cohort_tensorboard_tests cohort_agent_state_machine_tests cohort_update_residual_tests
)
address_torch_programs=(
  cohort_training_tests cohort_transformer_tests cohort_lora_tests cohort_dp_sgd_tests cohort_split_learning_tests
  cohort_evaluation_tests
  cohort_device_tests cohort_data_parallel_tests cohort_client_tests cohort_integration_tests
  cohort_vertical_integration_tests cohort_metrics_tests cohort_report_tests cohort_dashboard_browser_tests
)

# Tests left out of a run, each entry a ctest -E pattern, a space, and the reason:
#   '^SuiteName\.TestName$ why it cannot run under this sanitizer'
asan_excluded=(
)
# The suites below start a gRPC server or channel. Debian's gRPC, abseil and protobuf are
# not instrumented, so TSan sees none of the synchronization inside them (their mutexes
# and lock-free queues hand calls, buffers and reactors between gRPC's threads) and
# reports each hand-over as a race: 6,297 reports in one run of cohort_server_tests, all
# at those hand-overs. The server's own threads are checked without gRPC instead, by
# cohort_server_concurrency_tests (sites, an admin and an observer calling FederatedJob
# on threads of their own; the download pacer).
grpc_reason='starts gRPC, which is not instrumented (see above)'
tsan_excluded=(
  "^FederationClientTest\\. $grpc_reason"
  "^VerticalClientTest\\. $grpc_reason"
  "^FederatedJobTest\\. $grpc_reason"
  "^MtlsServer\\. $grpc_reason"
  "^SealingTest\\. $grpc_reason"
  "^PermissionMatrix\\. $grpc_reason"
  "^HostileAdminTest\\. $grpc_reason"
  "^RestartTest\\. $grpc_reason"
  "^LedgerAnchorTest\\. $grpc_reason"
  "^ExactlyOnceTest\\. $grpc_reason"
  "^RoundEvaluationTest\\. $grpc_reason"
  "^VerticalServer\\. $grpc_reason"
  "^DeniedFlood\\. $grpc_reason"
  "^DownloadTest\\. $grpc_reason"
)

configure() {  # configure BUILD_DIR SANITIZER
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOHORT_SANITIZE="$2" \
    -DCOHORT_BUILD_BENCH=OFF >/dev/null
}

# Writes to FILE a ctest -R regex naming exactly the tests whose command runs one of
# PROGRAMS: the tests gtest_discover_tests registered for those programs, and no others
# (by name: ctest's test numbers are not those of --show-only's listing when some programs
# of the build directory are not built). A program with no tests (not built) is an error.
select_tests() {  # select_tests BUILD_DIR FILE PROGRAM...
  local build="$1" file="$2"
  shift 2
  local python=python3
  [[ -x /usr/bin/python3 ]] && python=/usr/bin/python3
  ctest --test-dir "$build" --show-only=json-v1 | "$python" -c '
import json, os, re, sys
wanted, found, names = set(sys.argv[1:]), set(), []
for test in json.load(sys.stdin)["tests"]:
    program = os.path.basename((test.get("command") or [""])[0])
    if program in wanted:
        found.add(program)
        names.append(re.escape(test["name"]))
if wanted - found:
    sys.exit("sanitize.sh: no tests registered for " + " ".join(sorted(wanted - found)) +
             " (did the build of that program fail?)")
print("^(" + "|".join(names) + ")$")
' "$@" >"$file"
}

# Runs ctest on BUILD_DIR for the tests of PROGRAMS, less those EXCLUDE_REGEX names, with
# the sanitizer options the caller exported.
run_ctest() {  # run_ctest BUILD_DIR EXCLUDE_REGEX PROGRAM...
  local build="$1" exclude="$2"
  shift 2
  local list="$build/sanitize_tests.txt"
  select_tests "$build" "$list" "$@" || return 1
  nice -n 10 ctest --test-dir "$build" -j "$jobs" --output-on-failure -R "$(cat "$list")" -E "$exclude"
}

exclude_regex() {  # exclude_regex PATTERN_WITH_REASON...
  local regex='^$'
  for t in "$@"; do regex+="|${t%% *}"; done
  echo "$regex"
}

# The functions below run in a subshell each (the parentheses): the options they export
# stay theirs. `set -e` does not apply inside a function called left of `||`, hence the
# explicit returns.
run_address_programs() (  # run_address_programs EXTRA_TARGET... -- PROGRAM...
  local build="$root/build-asan" extra=()
  while [[ "$1" != -- ]]; do extra+=("$1"); shift; done
  shift
  configure "$build" address || return 1
  nice -n 19 ninja -C "$build" -j "$jobs" "${extra[@]}" "$@" || return 1
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
  # LibTorch and OpenBLAS are not instrumented: what they leak at exit (static
  # registries, thread pools) is theirs; scripts/sanitize/lsan.supp names it.
  export LSAN_OPTIONS="suppressions=$root/scripts/sanitize/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  run_ctest "$build" "$(exclude_regex "${asan_excluded[@]}")" "$@"
)

run_address_core() { run_address_programs -- "${address_core_programs[@]}"; }
run_address_torch() { run_address_programs cohort -- "${address_torch_programs[@]}"; }

run_thread() (
  local build="$root/build-tsan"
  configure "$build" thread || return 1
  nice -n 19 ninja -C "$build" -j "$jobs" "${thread_programs[@]}" || return 1
  # gRPC, abseil and OpenSSL are not instrumented: TSan cannot see the synchronization
  # inside them, so races it reports with only their frames are suppressed
  # (scripts/sanitize/tsan.supp); a race with one of our frames is reported.
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/sanitize/tsan.supp"
  run_ctest "$build" "$(exclude_regex "${tsan_excluded[@]}")" "${thread_programs[@]}"
)

# A test program missing from both address lists would go unchecked: refuse to run.
every_program() {
  grep -rhoE 'add_executable\((cohort_[a-z_]+_tests)' tests/ | sed 's/add_executable(//' | sort -u
}
unlisted="$(comm -23 <(every_program) <(printf '%s\n' "${address_core_programs[@]}" "${address_torch_programs[@]}" | sort -u))"
if [[ -n "$unlisted" && "$mode" != thread ]]; then
  echo "sanitize.sh: test programs in neither address list (add them at the top): $unlisted" >&2
  exit 2
fi

status=0
case "$mode" in
  thread) run_thread || status=1 ;;
  address-core) run_address_core || status=1 ;;
  address-torch) run_address_torch || status=1 ;;
  address)
    run_address_core || status=1
    run_address_torch || status=1
    ;;
  all)
    run_thread || status=1
    run_address_core || status=1
    run_address_torch || status=1
    ;;
  *)
    echo "usage: scripts/sanitize.sh [thread|address-core|address-torch|address|all]" >&2
    exit 2
    ;;
esac
exit "$status"
