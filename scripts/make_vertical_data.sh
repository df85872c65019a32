#!/usr/bin/env bash
# Data for the vertical (split learning) examples: the Wisconsin breast cancer table (569
# people, 30 features, label 0 = malignant, 1 = benign) cut by columns into party files.
#
#   scripts/make_vertical_data.sh [--out DIR] [--cache DIR] [--offline | --download-only]
#
# 1. Download (once): breast_cancer.csv ships inside Debian's python3-sklearn package. The
#    package is fetched with `apt-get download` and unpacked with `dpkg -x` into a scratch
#    dir, never installed; the CSV is kept as CACHE/breast_cancer.csv (default
#    data/cache/breast_cancer.csv). Its first line is sklearn's metadata
#    ("569,30,malignant,benign"), not a header; the label is the last column.
#    --download-only stops here (scripts/setup.sh); --offline never downloads and exits 3
#    when the CSV is not cached.
# 2. Party files under OUT (default data/vertical), each with an "id" column of synthetic
#    identifiers ("patient-000123" for row 123), each party holding its own seeded ~90% of
#    the people in its own shuffled order, so entity alignment has work to do:
#      breast_cancer/bank.csv      15 mean/error features + "diagnosis" (the label party)
#      breast_cancer/clinic.csv    the other 15 features
#      breast_cancer_3party/{bank,clinic,lab}.csv   mean_* + diagnosis / *_error / worst_*
#    Each party standardizes its own columns (z-scores over its own rows), as a party would
#    before training; the raw features span 0.001 to 4000.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/data/vertical"
cache="$repo/data/cache"
mode=all
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --cache) cache="$2"; shift 2 ;;
    --offline) mode=offline; shift ;;
    --download-only) mode=download; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "make_vertical_data: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

csv="$cache/breast_cancer.csv"
if [ ! -s "$csv" ]; then
  if [ "$mode" = offline ]; then
    echo "make_vertical_data: $csv is missing; run scripts/setup.sh (or this script without --offline)" >&2
    exit 3
  fi
  mkdir -p "$cache"
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  if ! (cd "$scratch" && apt-get download python3-sklearn >/dev/null 2>"$scratch/apt.log"); then
    cat "$scratch/apt.log" >&2
    echo "make_vertical_data: apt-get download python3-sklearn failed (run apt-get update first?)" >&2
    exit 1
  fi
  dpkg -x "$scratch"/python3-sklearn_*.deb "$scratch/unpacked"
  found="$(find "$scratch/unpacked" -path '*sklearn/datasets/data/breast_cancer.csv' | head -n 1)"
  if [ -z "$found" ]; then
    echo "make_vertical_data: no sklearn/datasets/data/breast_cancer.csv in python3-sklearn" >&2
    exit 1
  fi
  cp "$found" "$csv.tmp" && mv "$csv.tmp" "$csv"
  echo "make_vertical_data: cached $csv"
fi
[ "$mode" = download ] && exit 0

python=/usr/bin/python3
[ -x "$python" ] || python=python3
"$python" - "$csv" "$out" <<'EOF'
import csv, math, os, random, sys

source, out = sys.argv[1], sys.argv[2]
with open(source) as f:
    rows = list(csv.reader(f))
meta = rows[0]
# sklearn's layout: "n_samples,n_features,class names...", then features and the label.
if len(meta) >= 2 and meta[0].isdigit() and meta[1].isdigit():
    n, k = int(meta[0]), int(meta[1])
    rows = rows[1:]
else:
    sys.exit(f"{source}: expected sklearn's first line 'n_samples,n_features,...', got {meta[:4]}")
if len(rows) != n or any(len(r) != k + 1 for r in rows):
    sys.exit(f"{source}: expected {n} rows of {k} features and a label")

base = ["radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
        "concave_points", "symmetry", "fractal_dimension"]
names = ["mean_" + b for b in base] + [b + "_error" for b in base] + ["worst_" + b for b in base]
assert len(names) == k == 30
features = [[float(v) for v in r[:k]] for r in rows]
labels = [int(float(r[k])) for r in rows]

def write_party(path, columns, with_label, seed):
    chooser = random.Random(seed)
    kept = chooser.sample(range(n), round(0.9 * n))  # a random ~90%, in random order
    stats = []
    for c in columns:
        values = [features[i][c] for i in kept]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
        stats.append((mean, std))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id"] + [names[c] for c in columns] + (["diagnosis"] if with_label else []))
        for i in kept:
            cells = ["%.6g" % ((features[i][c] - m) / s) for c, (m, s) in zip(columns, stats)]
            w.writerow(["patient-%06d" % i] + cells + ([labels[i]] if with_label else []))
    os.replace(tmp, path)

two = os.path.join(out, "breast_cancer")
write_party(os.path.join(two, "bank.csv"), list(range(0, 15)), True, 11)
write_party(os.path.join(two, "clinic.csv"), list(range(15, 30)), False, 12)
three = os.path.join(out, "breast_cancer_3party")
write_party(os.path.join(three, "bank.csv"), list(range(0, 10)), True, 21)
write_party(os.path.join(three, "clinic.csv"), list(range(10, 20)), False, 22)
write_party(os.path.join(three, "lab.csv"), list(range(20, 30)), False, 23)
print(f"make_vertical_data: wrote {two} and {three}")
EOF
