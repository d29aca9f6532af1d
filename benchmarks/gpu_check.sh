#!/usr/bin/env bash
# Every GPU check of the project in one prepared script, for a GPU machine lent for minutes.
# Each step has its own time limit, the most important first; a failing step is reported and the
# script goes on. Runs from a plain checkout (no install: PYTHONPATH=src).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR [PART...]]
#
# OUT_DIR defaults to $OUT, else /tmp/sef-gpu-check; PARTS to "epoch cost eval compile train
# syncs":
#   epoch    every road of gpu_epoch.py (the decoded-image cache road too), its evaluation
#            passes, peak memory, the projected recipe and issue 21's targets
#   cost     sef_cost.py: SEF's compute-only step with one piece taken out at a time, and the
#            operators with the most device time (where SEF's extra 10 % goes)
#   eval     gpu_eval.py: where an evaluation pass's seconds go
#   compile  gpu_epoch.py --compile on the fast roads and the compute-only ones
#   train    sef train: demo bf16 / fp16 / killed and resumed, the CUB-shaped recipe with and
#            without --cache auto
#   syncs    gpu_syncs.py: host-device waits per step
# SEF_CHECK_BUDGET=SECONDS bounds the whole script (default 0: no bound): a step gets at most
# what is left of it and is skipped with under 30 s left, so the files written so far come back
# before the lent machine's call limit (600 s) ends the command (`run` with timeout_s 600:
# SEF_CHECK_BUDGET=560).
# SEF_CHECK_QUICK=1 runs it all on the CPU at toy sizes (benchmarks' --quick, a tiny demo):
# a dry run that tests/test_benchmarks.py makes. SEF_CHECK_DEVICE=cpu runs only the train part's
# commands on the CPU (slowly). OUT_DIR receives log.txt, gpu_epoch.json, sef_cost.json,
# gpu_eval.json, gpu_epoch_compile.json, gpu_syncs.json and runs.tar.gz (each run's config.yaml,
# metrics.jsonl).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-/tmp/sef-gpu-check}}")
parts=" ${*:2} "
[ "$parts" = "  " ] && parts=" epoch cost eval compile train syncs "
runs=/tmp/sef-gpu-runs
quick=""  # benchmark options
compiled="fast fast_cache sef_compute plain_compute"  # roads timed with --compile
tiny=""   # sef train options, after the step's own (the last value wins); words, no spaces
device=${SEF_CHECK_DEVICE:-cuda}
if [ -n "${SEF_CHECK_QUICK:-}" ]; then
  quick="--quick"
  tiny="--backbone small_cnn --weights none --image-size 32 --epochs 6 --batch-size 8
    --workers 0 --set data.options.per_class=3 --set data.options.test_per_class=2"
  compiled="plain_compute --backbone small_cnn"  # compiling takes a minute on a CPU
  device=cpu
  runs=$out/runs
fi
mkdir -p "$out" "$runs"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEF_CACHE=${SEF_CACHE:-/tmp/sef-cache}
exec > >(tee -a "$out/log.txt") 2>&1

budget=${SEF_CHECK_BUDGET:-0}
began=$(date +%s)

step() {  # step SECONDS NAME COMMAND...: run it under a time limit and say how it ended
  local seconds=$1 name=$2 left
  shift 2
  if [ "$budget" -gt 0 ]; then  # the script's budget: at most what is left of it
    left=$((budget - ($(date +%s) - began)))
    if [ "$left" -lt 30 ]; then
      echo "== $name: skipped, ${left} s left of SEF_CHECK_BUDGET=$budget"
      return
    fi
    [ "$left" -lt "$seconds" ] && seconds=$left
  fi
  echo "== $name: start $(date -u +%T), limit $seconds s"
  timeout -k 10 "$seconds" bash -c '"$@"' "$name" "$@"  # bash: the command may be a function
  echo "== $name: exit $? at $(date -u +%T)"
}

train() {  # train NAME ARGS...: sef train on the GPU into $runs/NAME
  local name=$1
  shift
  # shellcheck disable=SC2086  # $tiny is words
  python -m sef train --device "$device" --workers 8 --no-progress --out "$runs/$name" "$@" $tiny
}

interrupted_then_resumed() {  # kill a bf16 demo run after its 4th epoch, then --resume it
  train demo-resumed --amp bf16 --channels-last &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null \
    && [ "$(cat "$runs/demo-resumed/metrics.jsonl" 2>/dev/null | wc -l)" -lt 4 ]; do
    sleep 0.2
  done
  pkill -KILL -P "$pid"  # python, run by the function's subshell
  wait "$pid"
  echo "killed after $(wc -l <"$runs/demo-resumed/metrics.jsonl") epochs"
  train demo-resumed --resume
}

cub_shaped() {  # cub_shaped NAME [ARGS...]: the paper's CUB recipe shape: ResNet-50, G=4,
  local name=$1  # 448 px crops of 600 px, batch 32 (on the demo set drawn at 384 px)
  shift
  train "$name" --amp bf16 --channels-last --backbone resnet50 --groups 4 --epochs 3 \
    --image-size 448 --lr 0.01 --workers 16 --set data.recipe=resize_crop \
    --set loss.phi=1.0 --set data.options.resolution=384 --set data.options.per_class=64 \
    --set data.options.test_per_class=24 "$@"
}

echo "== machine"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
fi
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
  torchvision.__version__, 'cuda', torch.version.cuda,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

export -f train interrupted_then_resumed cub_shaped
export runs device tiny
wants() { [[ $parts == *" $1 "* ]]; }
if wants epoch; then
  step 300 gpu_epoch python benchmarks/gpu_epoch.py $quick \
    --out "$out/gpu_epoch.json"
fi
if wants cost; then
  step 180 sef_cost python benchmarks/sef_cost.py $quick \
    --out "$out/sef_cost.json"
fi
if wants eval; then
  step 150 gpu_eval python benchmarks/gpu_eval.py $quick \
    --out "$out/gpu_eval.json"
fi
if wants compile; then
  step 240 gpu_epoch_compile python benchmarks/gpu_epoch.py $quick \
    --compile --roads $compiled \
    --out "$out/gpu_epoch_compile.json"
fi
if wants train; then
  step 60 demo-bf16 train demo-bf16 --amp bf16 --channels-last
  if [ "$device" != cpu ]; then  # the gradient scaler needs CUDA
    step 60 demo-fp16 train demo-fp16 --amp fp16
  fi
  step 80 demo-resumed interrupted_then_resumed
  step 90 cub-shaped cub_shaped cub-shaped
  step 120 cub-shaped-cache cub_shaped cub-shaped-cache --cache auto
  for run in "$runs"/*/; do
    echo "== $(basename "$run"): $(tail -n 1 "$run/metrics.jsonl" 2>/dev/null)"
  done
  (cd "$runs" && tar czf "$out/runs.tar.gz" ./*/metrics.jsonl ./*/config.yaml)
fi
if wants syncs; then
  step 120 gpu_syncs python benchmarks/gpu_syncs.py $quick \
    --out "$out/gpu_syncs.json"
fi
echo "== done $(date -u +%T)"
