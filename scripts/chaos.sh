#!/usr/bin/env bash
# The chaos check (docs/reliability.md, "Chaos"): 20 clients, 10 rounds, the server and
# random clients killed and restarted meanwhile; exit 0 when every check passes.
#
#   scripts/chaos.sh [SEED]      binaries from ${COHORT_BUILD_DIR:-build}
set -euo pipefail
exec python3 "$(dirname "$0")/chaos.py" "$@"
