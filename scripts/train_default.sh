#!/usr/bin/env bash
# The default model's training runs, as run on the 2-core CPU (docs/MODEL_CARD.md).
# Re-running a stage resumes it from OUT/last.pt; a missing folder starts it afresh.
#   scripts/train_default.sh v3        (the stage in progress; v1 and v2 are the shipped history)
set -euo pipefail
cd "$(dirname "$0")/.."
WIDER=${WIDER:-../shared/data/widerface}
RUNS=${RUNS:-$HOME/ufssd_runs}
common=(--preset ufssd_light_ffmm_x1 --data-root "$WIDER" --batch-size 16 --lr 0.01 --grad-clip 10
        --resolution 480 --resume --checkpoint-every 100 --workers 1 --threads 2 --no-progress
        --log-every 20 --eval-subset "$WIDER/dev_images.txt")
case "${1:-v3}" in
  # v1: from scratch. Its schedule was shortened twice while it ran (2,200 -> 1,500 -> 1,200
  # iterations, to end within the session): lr 5e-3 to step 760, 5e-4 to 920, 5e-5, 5e-6 from 1,100.
  v1) .venv/bin/python -m ufssd train "${common[@]}" --iters 1200 --warmup 200 --eval-every 400 --out "$RUNS/light_ffmm_v1" ;;
  # v2: from v1; 1,800 planned, shortened to 1,400 at step 900: lr 5e-3 to 900, 5e-4, 5e-5 from 1,050, 5e-6 from 1,260.
  v2) .venv/bin/python -m ufssd train "${common[@]}" --init "$RUNS/light_ffmm_v1/final.safetensors" --iters 1400 --warmup 100 --eval-every 600 --out "$RUNS/light_ffmm_v2" ;;
  # v3: from v2, a long schedule across sessions
  v3) .venv/bin/python -m ufssd train "${common[@]}" --init "$RUNS/light_ffmm_v2/final.safetensors" --iters 8000 --warmup 100 --eval-every 1000 --out "$RUNS/light_ffmm_v3" ;;
  *) echo "unknown stage $1 (v1, v2, v3)" >&2; exit 2 ;;
esac
