#!/usr/bin/env bash
# Issue 23 on a GPU: do SEF's groups separate at the paper's length? birds32 drawn at CUB's size
# (188 training images per class: 6,016, CUB has 5,994; 25 test per class) and the paper's
# schedule (batch 32, 50 epochs = 9,400 SGD steps, lr 0.01 x0.1 every 20 epochs), ImageNet
# MobileNetV2 at 224 px with output stride 16: a 14x14 last map, as the paper's ResNet-50 at 448.
#
#   bash benchmarks/gpu_group_study.sh [OUT_DIR]
#
# Runs, in this order, while the time budget lasts: SEF (seed 0), plain (seed 0), the finetune
# preset (SEF at lambda 0.05 with Eq. 4 at phi 1 and loss.norm_floor=0.01: the CPU study's
# candidate, confirmed on birds32b, +6.6 points over plain at 48 epochs, docs/finetune.md),
# groups-only with the reference loss (phi 1) and with the paper's Eq. 4 (phi $PAPER_PHI), SEF
# with Eq. 4 at phi 1 and the floor (lambda 1: separated in every seed at a cost), the same with
# the entropy term only for the first 16 epochs (loss.lam_until=16), then the same at seed 1.
# Every run's settings are checked first. The first run is timed and a run starts only if one
# more of that length still fits in $BUDGET seconds from the script's start. Then `sef viz corr`
# of every run with groups. Every command is stopped $LIMIT seconds (default 570) after the
# script's start, before the lent machine's call limit (600 s) would end it, and the runs are
# packed after each one, so a run cut short still brings back the epochs it finished.
# Needs the MobileNetV2 ImageNet weights under $TORCH_HOME (default: .torch in the repo, carried
# to the GPU machine: scripts/fetch_mobilenet_v2_weights.py then copy ~/.cache/torch/hub there);
# without them it stops at once, in one line, rather than let every run fail to download them.
# OUT_DIR (default $OUT, else /tmp/sef-group-study) receives log.txt, runs.tar.gz (every run's
# config.yaml and metrics.jsonl) and corr-NAME.png.
# SEF_STUDY_DEVICE=cpu SEF_STUDY_TINY=1 runs it in seconds on a CPU with tiny data: a dry run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-/tmp/sef-group-study}}")
runs=${SEF_STUDY_RUNS:-/tmp/sef-group-study-runs}
device=${SEF_STUDY_DEVICE:-cuda}
BUDGET=${BUDGET:-540}
LIMIT=${LIMIT:-570}
launched=$(date +%s)
PAPER_PHI=${PAPER_PHI:-0.1}
mkdir -p "$out" "$runs"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SEF_CACHE=${SEF_CACHE:-/tmp/sef-cache} TORCH_HOME=${TORCH_HOME:-$PWD/.torch}
exec > >(tee -a "$out/log.txt") 2>&1

size=(--set data.options.per_class=188 --set data.options.test_per_class=25
  --set data.options.resolution=224 --image-size 224 --epochs 50 --set optim.step_size=20)
speed=(--amp bf16 --channels-last --workers 14)
if [ -n "${SEF_STUDY_TINY:-}" ]; then
  size=(--set data.options.per_class=2 --set data.options.test_per_class=2
    --set data.options.resolution=32 --image-size 32 --epochs 1 --weights none)
  speed=(--workers 0)
fi
floor="--set loss.group_variant=paper --set loss.phi=1 --set loss.norm_floor=0.01"
names=(sef plain finetune groups-reference groups-paper sef-paper-floor
  sef-paper-floor-lamuntil)
presets=(birds32-mobilenet_v2 birds32-mobilenet_v2-plain birds32-mobilenet_v2-finetune
  birds32-mobilenet_v2-groups-only birds32-mobilenet_v2-groups-only birds32-mobilenet_v2
  birds32-mobilenet_v2)
extra=("" "" "" "--set loss.group_variant=reference --set loss.phi=1"
  "--set loss.group_variant=paper --set loss.phi=$PAPER_PHI" "$floor"
  "$floor --set loss.lam_until=16")

weights=$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth
if [ -z "${SEF_STUDY_TINY:-}" ] && [ ! -f "$weights" ]; then  # else every run fails to download
  echo "== no ImageNet MobileNetV2 weights at $weights: run python" \
    "scripts/fetch_mobilenet_v2_weights.py and carry .torch, or set TORCH_HOME"
  exit 2
fi
echo "== machine $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
python -c "import torch; print('torch', torch.__version__)"
echo "== checking every run's settings"
for i in "${!names[@]}"; do  # a mistyped option fails here, not after the runs before it
  # shellcheck disable=SC2086  # extra holds whole --set options
  python -c "
import sys; from sef.config.presets import resolve_config
resolve_config(sys.argv[1], overrides=sys.argv[3::2])
" "${presets[$i]}" ${extra[$i]} || { echo "== ${names[$i]}: bad settings"; exit 2; }
done
start=$(date +%s)

bounded() {  # bounded COMMAND...: run it, stopped LIMIT seconds after the script's start
  local left=$((LIMIT - ($(date +%s) - launched)))
  if [ "$left" -le 0 ]; then
    echo "== not run, no time left (LIMIT=$LIMIT s): $*" | cut -c1-200
    return 124
  fi
  timeout -k 5 "$left" "$@"
}

pack() {  # every run's metrics.jsonl and config.yaml so far, into runs.tar.gz
  (cd "$runs" && shopt -s nullglob && files=(./*/metrics.jsonl ./*/config.yaml) \
    && tar czf "$out/runs.tar.gz" "${files[@]}")
}

echo "== generating birds32 at this size: start $(date -u +%T)"
bounded python -c "
import sys; from sef import datasets
for split in ('trainval', 'test'):
    datasets.load('birds32', None, split, progress=False, **dict(
        (k, int(v)) for k, v in (a.split('=') for a in sys.argv[1:])))
" $(printf '%s\n' "${size[@]}" | sed -n 's/^data.options.//p')
echo "== generated in $(($(date +%s) - start)) s"

first=0
for seed in 0 1; do
  for i in "${!names[@]}"; do
    name=${names[$i]}-seed$seed
    elapsed=$(($(date +%s) - start))
    if [ "$first" -gt 0 ] && [ $((elapsed + first)) -gt "$BUDGET" ]; then
      echo "== $name: skipped, ${elapsed} s used and a run takes ${first} s (budget $BUDGET s)"
      continue
    fi
    echo "== $name: start $(date -u +%T)"
    began=$(date +%s)
    # shellcheck disable=SC2086  # extra holds whole --set options
    bounded python -m sef train --preset "${presets[$i]}" --device "$device" --no-progress \
      --seed "$seed" --out "$runs/$name" "${size[@]}" "${speed[@]}" ${extra[$i]}
    echo "== $name: exit $? after $(($(date +%s) - began)) s"
    [ "$first" -gt 0 ] || first=$(($(date +%s) - began))
    pack
    if [ -f "$runs/$name/last.pt" ] && [ "${names[$i]}" != plain ]; then
      bounded python -m sef viz corr --checkpoint "$runs/$name/last.pt" --device "$device" \
        --no-progress --out "$out/corr-$name.png" || echo "== $name: viz corr failed"
    fi
  done
done
for run in "$runs"/*/; do
  echo "== $(basename "$run"): $(tail -n 1 "$run/metrics.jsonl" 2>/dev/null | cut -c1-400)"
done
pack
echo "== done $(date -u +%T), $(($(date +%s) - start)) s"
