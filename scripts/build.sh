#!/usr/bin/env bash
# Configures and builds Cohort into ./build (Release with debug info). Extra arguments go to
# the build step, e.g. `scripts/build.sh --target cohort`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"
# Files that include LibTorch take ~1.5 GB of RAM each to compile; two at a time fits anywhere.
jobs="${COHORT_BUILD_JOBS:-$(nproc)}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs" "$@"
