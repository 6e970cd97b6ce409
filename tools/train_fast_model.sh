#!/usr/bin/env bash
# Rebuild the fast-mode model backend/dvcl/models/phantom_fast (`dvcl segment --fast`) from scratch on a CPU.
# Same synthetic phantoms as tools/train_demo_model.sh (seed 100), resampled to a coarser 4 x 4 x 6 mm grid and
# trained on a smaller 24x48x48 patch: about 3x fewer voxels per CT than phantom_demo (2.5 x 2.5 x 5 mm) and
# about 4x fewer sliding-window voxels, so segmentation is several times faster at the cost of small structures.
# Trained on synthetic phantoms only: a demo of the pipeline, NOT a model for patients.
# Resumable: run it again after an interruption and it continues the run in $WORK/run.
set -euo pipefail
cd "$(dirname "$0")/.."
DVCL=${DVCL:-.venv/bin/dvcl}
WORK=${WORK:-/tmp/dvcl_fast_model}
ITER=${ITER:-2000}
METHOD=${METHOD:-fully}
SPACING=${SPACING:-"4.0 4.0 6.0"}
PATCH=${PATCH:-"24 48 48"}
mkdir -p "$WORK"
[ -f "$WORK/phantoms/dataset.json" ] || $DVCL --progress none phantom "$WORK/phantoms" --labeled 16 --unlabeled 8 --seed 100
# shellcheck disable=SC2086
$DVCL --progress none prepare "$WORK/phantoms" -o "$WORK/cache" --spacing $SPACING
if [ -f "$WORK/run/config.yaml" ]; then
  $DVCL train --resume "$WORK/run"
else
  # shellcheck disable=SC2086
  $DVCL train --data "$WORK/cache" --method "$METHOD" --labeled-fraction 1.0 --profile quick --iterations "$ITER" \
    --patch $PATCH --val-every 100 --seed 0 --out "$WORK/run"
fi
$DVCL export "$WORK/run" -o backend/dvcl/models/phantom_fast --name phantom_fast --overwrite \
  --description "Fast-mode phantom model ($METHOD, $ITER iterations, ${SPACING// /x} mm) trained on 10 synthetic abdominal CT phantoms by tools/train_fast_model.sh. Not for clinical use."
# the model card (Dice on the real abdomen CT of tests/data and on held-out phantoms) and the fast-mode marker
${PYTHON:-.venv/bin/python} tools/model_card.py backend/dvcl/models/phantom_fast --mode fast \
  --rebuild tools/train_fast_model.sh \
  --training "10 synthetic abdominal CT phantoms (dvcl phantom --labeled 16 --unlabeled 8 --seed 100, 6:2:2 split, all training cases labeled), resampled to ${SPACING// / x } mm; no real scan"
