#!/usr/bin/env bash
# The long checks as ctest runs them (labels "fuzz", "sanitize" and "chaos", docs/reliability.md):
# skipped (exit 77) unless COHORT_LONG_CHECKS=1, so a plain `ctest` stays fast.
#
#   scripts/long_check.sh fuzz       scripts/fuzz.sh ${COHORT_FUZZ_SECONDS:-600} ${COHORT_FUZZ_JOBS:-2}
#   scripts/long_check.sh sanitize   scripts/sanitize.sh all
#   scripts/long_check.sh chaos      scripts/chaos.sh ${COHORT_CHAOS_SEED:-random}
#   scripts/long_check.sh soak       scripts/soak.sh ${COHORT_SOAK_OUT:-build/soak} 200 8
set -euo pipefail
here="$(dirname "$0")"
if [[ "${COHORT_LONG_CHECKS:-}" != 1 ]]; then
  echo "skipped: a long check; run it with COHORT_LONG_CHECKS=1 (docs/reliability.md)"
  exit 77
fi
case "${1:-}" in
  fuzz) exec "$here/fuzz.sh" "${COHORT_FUZZ_SECONDS:-600}" "${COHORT_FUZZ_JOBS:-2}" ;;
  sanitize) exec "$here/sanitize.sh" all ;;
  chaos) exec "$here/chaos.sh" "${COHORT_CHAOS_SEED:-}" ;;
  soak) exec "$here/soak.sh" "${COHORT_SOAK_OUT:-}" "${COHORT_SOAK_ROUNDS:-200}" "${COHORT_SOAK_CLIENTS:-8}" ;;
  *)
    echo "usage: scripts/long_check.sh fuzz|sanitize|chaos|soak" >&2
    exit 2
    ;;
esac
