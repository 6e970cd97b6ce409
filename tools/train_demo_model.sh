#!/usr/bin/env bash
# Rebuild the embedded demo model backend/dvcl/models/phantom_demo from scratch (CPU, about 20-30 minutes).
# It is trained on synthetic phantoms only: a demo of the pipeline, NOT a model for patients.
set -euo pipefail
cd "$(dirname "$0")/.."
DVCL=${DVCL:-.venv/bin/dvcl}
WORK=${WORK:-/tmp/dvcl_demo_model}
ITER=${ITER:-1000}
# The shipped model is trained with all 10 training phantoms labeled. METHOD=fully (one supervised U-Net) keeps
# this within minutes on a CPU; METHOD=dvcl gives the co-trained A+B pair (about 8x slower per iteration).
METHOD=${METHOD:-fully}
mkdir -p "$WORK"
[ -f "$WORK/phantoms/dataset.json" ] || $DVCL --progress none phantom "$WORK/phantoms" --labeled 16 --unlabeled 8 --seed 100
$DVCL --progress none prepare "$WORK/phantoms" -o "$WORK/cache" --spacing 2.5 2.5 5.0
if [ -f "$WORK/run/config.yaml" ]; then
  $DVCL train --resume "$WORK/run"
else
  $DVCL train --data "$WORK/cache" --method "$METHOD" --labeled-fraction 1.0 --profile quick --iterations "$ITER" \
    --val-every 100 --seed 0 --out "$WORK/run"
fi
$DVCL export "$WORK/run" -o backend/dvcl/models/phantom_demo --name phantom_demo --overwrite \
  --description "Phantom demo model ($METHOD, $ITER iterations) trained on 10 synthetic abdominal CT phantoms by tools/train_demo_model.sh. Not for clinical use."
# the model card (Dice on the real abdomen CT of tests/data and on held-out phantoms): export rewrites model.json
${PYTHON:-.venv/bin/python} tools/model_card.py backend/dvcl/models/phantom_demo --rebuild tools/train_demo_model.sh \
  --training "10 synthetic abdominal CT phantoms (dvcl phantom --labeled 16 --unlabeled 8 --seed 100, 6:2:2 split, all training cases labeled), resampled to 2.5 x 2.5 x 5 mm; no real scan"
