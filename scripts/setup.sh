#!/usr/bin/env bash
# Installs the Debian 12 packages Cohort builds, tests and runs with. Idempotent.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp libgloo-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsodium-dev libssl-dev zlib1g-dev libsqlite3-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist python3-cryptography-vectors fortunes
  python3-torch python3-numpy
  libcpp-httplib-dev python3-prometheus-client
  chromium python3-protobuf fonts-dejavu-core
)

# breast_cancer.csv for the vertical examples and their test, fetched once into
# data/cache/ (scripts/make_vertical_data.sh); without it they skip.
fetch_data() {
  "$(dirname "$0")/make_vertical_data.sh" --download-only ||
    echo "setup: could not fetch breast_cancer.csv; the vertical examples and their test will skip" >&2
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  fetch_data
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fetch_data
