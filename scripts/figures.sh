#!/usr/bin/env bash
# Regenerates the speed figures of the README into runs/figures/ (git-ignored).
# Run it on an otherwise idle machine (pause any training: kill -STOP / -CONT).
#   scripts/figures.sh [light|heavy|all]     (default: light = everything but VGG-16/ResNet-152)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=runs/figures
mkdir -p "$out"
what=${1:-light}
HEAVY=$($PY -c "import ufssd; print(' '.join(p for p in ufssd.list_presets() if 'light' not in p))")

if [ "$what" != heavy ]; then
  $PY -m ufssd bench --sizes 640x480,1024x768 --backend torch,onnxruntime --repeats 30 | tee "$out/bench_default.md"
  $PY benchmarks/bench_forward.py --presets ufssd_light ufssd_light_ffmm_x1 --runs 30 | tee "$out/forward_light.md"
  $PY benchmarks/bench_train.py --presets ufssd_light_ffmm_x1 --threads 2 | tee "$out/train_light.md"
  $PY benchmarks/bench_evaluate.py | tee "$out/evaluate.md"
  $PY benchmarks/bench_data.py | tee "$out/data.md"
fi
if [ "$what" != light ]; then
  # shellcheck disable=SC2086
  $PY benchmarks/bench_forward.py --presets $HEAVY --heavy-runs 2 | tee "$out/forward_heavy.md"
  $PY benchmarks/bench_train.py --presets ufssd_vgg16_ffmm_x1 --batch 1 --iters 2 --threads 2 | tee "$out/train_vgg16.md"
fi
