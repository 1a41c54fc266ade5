#!/usr/bin/env bash
# Rebuild the K-curve table and figure (docs/RESULTS.md, "The accuracy gap over K") from the
# finished runs in a sweep dir, finished or still running, and copy them into docs/:
#
#   bash benchmarks/k_curve_publish.sh [RUN_DIR]      # default runs/k-curve
#
# Trains nothing (frlr sweep --no-train): every finished run of any seed in RUN_DIR counts, a
# missing or unfinished one is skipped, and the table says n per point. Writes
# docs/results/k-curve/sweep.{json,csv,md} and docs/figures/results_tiny_k_curve.png, and puts
# the compact gap table (one row per K) between the k-curve markers of docs/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${1:-runs/k-curve}
py=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
# The recipe must be the one the runs were trained with: a run with another config is refused.
"$py" -m frlr.cli sweep --param num-classes --values 10,25,50,100,200 \
  --losses sr,lr,hs-lr,ss-lr,ss-lr:r=0 --dataset tiny-imagenet --preset cpu --threads 1 \
  --eval-every 6 --out "$run_dir" --no-train
mkdir -p docs/results/k-curve docs/figures
for name in sweep.json sweep.csv sweep.md; do
  cp "$run_dir/$name" "docs/results/k-curve/.$name.tmp" && mv "docs/results/k-curve/.$name.tmp" "docs/results/k-curve/$name"
done
cp "$run_dir/sweep_num_classes.png" docs/figures/.results_tiny_k_curve.png.tmp
mv docs/figures/.results_tiny_k_curve.png.tmp docs/figures/results_tiny_k_curve.png
# The compact gap table (the end of sweep.md) replaces the one between the markers in RESULTS.
"$py" - <<'PY'
import os
from datetime import datetime, timezone
from pathlib import Path

table = Path("docs/results/k-curve/sweep.md").read_text(encoding="utf-8")
table = table[table.index("### top-1 gap to"):].split("\n", 2)[2].strip()
stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
page = Path("docs/RESULTS.md")
text = page.read_text(encoding="utf-8")
start, end = "<!-- k-curve table: benchmarks/k_curve_publish.sh -->", "<!-- /k-curve table -->"
head, rest = text.split(start)
_, tail = rest.split(end)
block = f"{start}\n{table}\n\n(rebuilt from the finished runs at {stamp})\n{end}"
partial = page.with_name(f".{page.name}.tmp-{os.getpid()}")
partial.write_text(head + block + tail, encoding="utf-8")
os.replace(partial, page)
PY
echo "k_curve_publish: docs/results/k-curve/sweep.md, docs/figures/results_tiny_k_curve.png, the table in docs/RESULTS.md"
