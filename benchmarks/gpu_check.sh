#!/usr/bin/env bash
# The CUDA path, checked in one go on one GPU, within 8 minutes; every figure into one file.
#
#   bash benchmarks/gpu_check.sh                # writes $OUT/gpu_check.md, else docs/benchmarks/
#   bash benchmarks/gpu_check.sh results.md     # writes results.md
#
# Steps, each under its own time limit and all under one deadline (GPU_CHECK_SECONDS, 470 s):
#   1. the CUDA-marked tests (pytest -m cuda): losses against the float64 reference and the CPU,
#      compiled losses, autocast, device-side augmentation, checkpoints across devices, and the
#      logits-free linear losses, their bf16/fp16 products included (tests/test_cuda_linear.py;
#      FRLR_CUDA_TESTS_DEVICE=cpu runs those on the CPU, standing in for the GPU, and
#      FRLR_HALF_PRODUCTS=1 there takes the half-precision products too);
#   2. one epoch of `frlr train` with --bf16 --channels-last on the GPU (ResNet-20, digits at
#      32x32: the one dataset a bare checkout carries, bundled with scikit-learn);
#   3. python -m benchmarks.loss_speed --device cuda at a few sizes, with the memory table;
#   4. python -m benchmarks.huge_k --device cuda (the logits-free losses at K = 10^5 and 10^6
#      and a chunk_size sweep; it starts no measurement after the step's limit less 20 s, and
#      its record, rewritten after each table, keeps what finished).
# Limits: tests 200 s, train 60 s, loss_speed 90 s, huge_k 90 s: 440 s of the 470 at most; each
# step usually ends well before its limit, and huge_k's limit is what is left when less.
# Needs only what a GPU machine's Python already holds (torch, numpy, scipy, scikit-learn,
# matplotlib, pillow, tqdm, pytest): the package runs from src/ without installing, the
# benchmarks as modules from the repository root (`python -m benchmarks.x`). On a machine
# without CUDA it prints one line and exits 0. Exit status: 0 when every step passed, else 1.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 FRLR_PROGRESS=0 MPLBACKEND=Agg

if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $py (torch missing or CPU-only); nothing to check"
  exit 0
fi

if [ $# -ge 1 ]; then
  record=$1
elif [ -n "${OUT:-}" ]; then
  record=$OUT/gpu_check.md
else
  record=docs/benchmarks/gpu_check.md
fi
mkdir -p "$(dirname "$record")"
work=$(mktemp -d)
log="$(dirname "$record")/gpu_check.log"
: >"$log"
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-470}))
failed=()

# step NAME LIMIT COMMAND...: runs COMMAND (output to the log and to NAME's file) for at most
# LIMIT seconds, or what is left before the deadline, whichever is less.
step() {
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  shift 2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    echo "gpu_check: $name skipped, the time is up" | tee -a "$log"
    failed+=("$name (no time left)")
    return
  fi
  echo "gpu_check: $name (at most ${limit} s): $*" | tee -a "$log"
  local start=$SECONDS status=0
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.out" 2>&1 || status=$?
  cat "$work/$name.out" >>"$log"
  echo "gpu_check: $name exit $status after $((SECONDS - start)) s" | tee -a "$log"
  [ "$status" -eq 0 ] || failed+=("$name (exit $status$([ "$status" -eq 124 ] && echo ', timed out'))")
}

mapfile -t cuda_files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
step tests 200 "$py" -m pytest -m cuda -q -rfE -p no:cacheprovider "${cuda_files[@]}"
step train 60 "$py" -m frlr.cli train --preset cpu --dataset digits --arch resnet20 \
  --image-size 32 --epochs 1 --loss ss-lr --bf16 --channels-last --device cuda --threads 4 \
  --cache-dir "$work/cache" --no-progress --out "$work/train"
step loss_speed 90 "$py" -m benchmarks.loss_speed --device cuda --n 128,1024 \
  --k 1000,10000,100000 --rounds 2 --min-time 0.3 --out "$work/loss_speed.md"
if [ -f benchmarks/huge_k.py ]; then
  # a huge_k.py without --device would start the 26-minute CPU record: it gets no step
  if [[ $("$py" -m benchmarks.huge_k --help 2>/dev/null) == *--device* ]]; then
    huge_limit=$((deadline - SECONDS))
    [ "$huge_limit" -gt 90 ] && huge_limit=90
    step huge_k "$huge_limit" "$py" -m benchmarks.huge_k --device cuda \
      --seconds $((huge_limit > 30 ? huge_limit - 20 : 10)) --out "$work/huge_k.md"
  else
    echo "gpu_check: huge_k skipped, this huge_k.py has no --device" | tee -a "$log"
  fi
fi

# The record: machine, outcome of each step, and the figures.
{
  echo "# GPU check"
  echo
  echo "Date: $(date -u +%Y-%m-%d). Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo "Command: \`bash benchmarks/gpu_check.sh\`; wall time $SECONDS s (deadline ${GPU_CHECK_SECONDS:-470} s)."
  echo
  "$py" - <<'EOF'
import torch
p = torch.cuda.get_device_properties(0)
print(f"Machine: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}.")
from frlr.torch.linear import products
cuda = torch.device("cuda")
print("\nHalf-precision products of the linear losses (frlr.torch.linear.products): "
      + "; ".join(f"{str(t)[6:]} native {products.native_half(cuda, t)}, logits out in "
                  f"{'float32' if products.float32_output('cuda', t) else str(t)[6:]}"
                  for t in (torch.bfloat16, torch.float16)) + ".")
EOF
  echo
  if [ ${#failed[@]} -eq 0 ]; then echo "Outcome: every step passed."; else
    echo "Outcome: FAILED: ${failed[*]}."; fi
  echo
  echo "## CUDA-marked tests"
  echo
  echo '```'
  grep -E "^(FAILED|ERROR)|passed|failed|skipped|error" "$work/tests.out" | tail -40 || true
  echo '```'
  echo
  echo "## One epoch, bf16 + channels-last (ResNet-20, digits at 32x32, SS-LR)"
  echo
  if [ -f "$work/train/result.json" ]; then
    "$py" - "$work/train" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
result = json.loads((run / "result.json").read_text())
epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
print(f"- test top-1 {result['test_top1']:.4f} (chance 0.1), train loss {result['train_loss']:.4f}")
print(f"- {epoch.get('images_per_s', float('nan')):.0f} images/s in the epoch; "
      f"run wall time {result['wall_time_s']:.1f} s on {result['hardware'].get('gpu', '?')}")
EOF
  else
    echo "No result: see the log."
    tail -5 "$work/train.out"
  fi
  echo
  echo "## Loss speed on the GPU"
  echo
  if [ -f "$work/loss_speed.md" ]; then sed -n '/^### /,$p' "$work/loss_speed.md"; else
    echo "No record: see the log."; tail -5 "$work/loss_speed.out"; fi
  if [ -f benchmarks/huge_k.py ]; then
    echo
    echo "## Huge K on the GPU (python -m benchmarks.huge_k --device cuda)"
    echo
    if [ -f "$work/huge_k.md" ]; then sed '1,/^Command:/{/^Command:/!d}' "$work/huge_k.md"; else
      echo "No record: see the log."; echo '```'; tail -20 "$work/huge_k.out" 2>/dev/null
      echo '```'; fi
  fi
} >"$record"
rm -rf "$work"
echo "gpu_check: wrote $record (log: $log)"
[ ${#failed[@]} -eq 0 ]
