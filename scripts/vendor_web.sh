#!/usr/bin/env bash
# Refreshes the charting library the dashboard and `cohort report` embed (web/vendor/):
# uPlot from the npm registry, its minified build, stylesheet and license, unchanged.
#   scripts/vendor_web.sh [VERSION]   (default: the version web/vendor/README.md names)
set -euo pipefail
version="${1:-1.6.32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@${version}" >/dev/null && tar xzf uplot-*.tgz)
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$root/web/vendor/"
cp "$work/package/LICENSE" "$root/web/vendor/uPlot.LICENSE"
echo "vendor_web: uPlot ${version} in web/vendor/; update the version in web/vendor/README.md and commit"
