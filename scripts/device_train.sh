#!/usr/bin/env bash
# The default model's GPU stage, run once on the `device` tool's machine (docs/MODEL_CARD.md).
# Needs the packed data (scripts/pack_training_data.py) and the init weights in .device_data/,
# carried there; writes the run into $OUT/run. Locally: OUT=runs/device_try BUDGET=60 ... to test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
"$PY" -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
nproc
"$PY" scripts/train_within.py --budget "${BUDGET:-520}" --probe-steps "${PROBE:-150}" --python "$PY" -- \
  --preset ufssd_light_ffmm_x1 --data-root .device_data/widerface --init "${INIT:-.device_data/init.safetensors}" \
  --batch-size "${BATCH:-64}" --lr "${LR:-0.01}" --grad-clip 10 --resolution "${RES:-640}" --warmup 100 \
  --workers "${WORKERS:-15}" --no-progress --no-tensorboard --log-every 25 --checkpoint-every "${CKPT_EVERY:-250}" \
  --out "$OUT/run" ${EXTRA:-}
