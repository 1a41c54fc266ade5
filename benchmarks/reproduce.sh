#!/usr/bin/env bash
# Reruns every measured number in docs/RESULTS.md, step by step; each step resumes where an
# interrupted run stopped (frlr compare/sweep skip finished runs), so rerunning continues.
#
#   bash benchmarks/reproduce.sh                 # everything: about 5 h on 2 CPU cores
#   bash benchmarks/reproduce.sh --quick         # every step on 2 batches an epoch (CI smoke test)
#   bash benchmarks/reproduce.sh tiny omniglot   # only these steps
#
# Steps: main ncd tiny sweep kcurve recipes omniglot mosaic speed. Data: $FRLR_DATA, else
# ../shared/data (the Tiny ImageNet-200 subset and the two Omniglot background zips). Runs go to $OUT (default
# runs/, quick: a temporary folder); figures and benchmark records to docs/ (full mode only).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
steps=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    main | ncd | tiny | sweep | kcurve | recipes | omniglot | mosaic | speed) steps+=("$arg") ;;
    *) echo "usage: bash benchmarks/reproduce.sh [--quick] [main ncd tiny sweep kcurve recipes omniglot mosaic speed]" >&2; exit 2 ;;
  esac
done
[ ${#steps[@]} -gt 0 ] || steps=(main ncd tiny sweep kcurve recipes omniglot mosaic speed)

py=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
frlr=("$py" -m frlr.cli)
data=${FRLR_DATA:-$(cd .. && pwd)/shared/data}
if [ "$quick" = 1 ]; then
  out=${OUT:-$(mktemp -d)}
  # 2 batches an epoch, 1 epoch, 1 seed: every step of the pipeline, none of the compute.
  # fp32: a CPU without native bfloat16 (AVX2 only) emulates bf16 about 10x slower, and the
  # full evaluation of each quick run would then dominate the CI smoke test.
  budget=(--epochs 1 --max-steps-per-epoch 2 --seeds 1 --threads 1 --no-progress --no-bf16)
  # The first 20 of Tiny ImageNet's 200 classes: testing a quick run on all 10,000 validation
  # images was most of this smoke test's time, and K = 20 takes every code path K = 200 does.
  tiny_k=(--num-classes 20)
  sweep_m=5,25
  sweep_r=0,2
  kcurve_k=2,10
  kcurve_seeds=1
else
  out=${OUT:-runs}
  budget=(--seeds 3 --threads 1 --no-progress)
  tiny_k=()
  sweep_m=5,10,25,50,75,100
  sweep_r=0,0.5,1,2,3,5
  kcurve_k=10,25,50,100,200
  kcurve_seeds=2
fi
echo "reproduce: steps ${steps[*]}; data $data; runs in $out; quick=$quick"

run() {
  echo "+ $*"
  local start=$SECONDS
  "$@"
  echo "  ($((SECONDS - start)) s)"
}

for step in "${steps[@]}"; do
  case "$step" in
    main)  # Digits (bundled with scikit-learn): the main job, `frlr` with no arguments.
      run "${frlr[@]}" compare --dataset digits --preset cpu "${budget[@]}" --out "$out/digits-small-cnn-cpu" ;;
    ncd)  # Fig. 2: NCD of LR vs SR, HS-LR, SS-LR on the Tiny ImageNet subset.
      if [ "$quick" = 1 ]; then
        run "$py" -m benchmarks.ncd_figure --data-dir "$data" --epochs 1 --steps 3 --probe 64 --no-bf16 \
          --out "$out/ncd_figure" --figure "$out/ncd_figure/ncd.png"
      else
        run "$py" -m benchmarks.ncd_figure --data-dir "$data" --out "$out/ncd_figure"
      fi ;;
    tiny)  # Table 1 analogue: ResNet-20 at 32x32 on the Tiny ImageNet subset (K = 200).
      run "${frlr[@]}" compare --dataset tiny-imagenet --data-dir "$data" --preset cpu \
        --losses sr,lr,hs-lr,ss-lr "${budget[@]}" "${tiny_k[@]}" --out "$out/tiny-resnet20-cpu" ;;
    sweep)  # Fig. 6 and 7: HS-LR's m and SS-LR's r on the same recipe, one seed each.
      seeds=(--seeds 1)  # overrides the budget's --seeds: a sweep point is one run here
      run "${frlr[@]}" sweep --param m --values "$sweep_m" --dataset tiny-imagenet --data-dir "$data" \
        --preset cpu "${budget[@]}" "${seeds[@]}" "${tiny_k[@]}" --out "$out/tiny-sweep-m"
      run "${frlr[@]}" sweep --param r --values "$sweep_r" --dataset tiny-imagenet --data-dir "$data" \
        --preset cpu "${budget[@]}" "${seeds[@]}" "${tiny_k[@]}" --out "$out/tiny-sweep-r" ;;
    kcurve)  # The accuracy gap over K: the first K of the 200 classes, 5 curves, 2 seeds.
      run "${frlr[@]}" sweep --param num-classes --values "$kcurve_k" \
        --losses sr,lr,hs-lr,ss-lr,ss-lr:r=0 --dataset tiny-imagenet --data-dir "$data" \
        --preset cpu --eval-every 6 "${budget[@]}" --seeds "$kcurve_seeds" --out "$out/k-curve"
      [ "$quick" = 1 ] || run bash benchmarks/k_curve_publish.sh "$out/k-curve" ;;
    recipes)  # Soft targets (issue 17): SR and SS-LR with and without mixup + label smoothing.
      seeds=(--seeds 1)
      for mixing in plain mixup-ls; do
        flags=(--mixup 0 --label-smoothing 0)
        if [ "$mixing" = mixup-ls ]; then flags=(--mixup 0.2 --label-smoothing 0.1); fi
        run "${frlr[@]}" compare --dataset tiny-imagenet --data-dir "$data" --preset cpu \
          --losses sr,ss-lr "${budget[@]}" "${seeds[@]}" "${flags[@]}" "${tiny_k[@]}" \
          --out "$out/recipes-tiny-cpu-$mixing"
      done ;;
    omniglot)  # Table 2 analogue: cross-class retrieval on 106 unseen Omniglot characters.
      run "${frlr[@]}" compare --dataset omniglot-retrieval --data-dir "$data" --preset cpu \
        --losses sr,lr,hs-lr,ss-lr "${budget[@]}" --out "$out/omniglot-retrieval-cpu" ;;
    mosaic)  # Table 3 analogue: 2x2 Tiny ImageNet mosaics, 4 positives of 200 labels.
      run "${frlr[@]}" compare --dataset mosaic-tiny-imagenet --data-dir "$data" --preset cpu \
        --losses lr,hs-lr,ss-lr "${budget[@]}" --out "$out/mosaic-cpu" ;;
    speed)  # docs/benchmarks: loss speed and memory, hard selection, training throughput.
      if [ "$quick" = 1 ]; then
        run "$py" -m benchmarks.loss_speed --quick
        run "$py" -m benchmarks.selection_speed --quick
        run "$py" -m benchmarks.train_speed --arch resnet20 --steps 2 --warmup 1 --rounds 1 \
          --images 512 --batch-size 32 --workers 0 --no-bf16
      else
        run "$py" -m benchmarks.loss_speed
        run "$py" -m benchmarks.selection_speed
        run "$py" -m benchmarks.train_speed --steps 30 --channels-last --write docs/benchmarks/train_speed.md
        run "$py" -m benchmarks.train_speed --steps 30 --no-bf16 --write docs/benchmarks/train_speed.md --append
      fi ;;
  esac
done
echo "reproduce: done; runs in $out"
