#!/usr/bin/env bash
# issue 13, session 8, "more phantoms": the coarse-grid recipe from scratch (coarse.sh / coarse_s1.sh: 4 x 4 x 6 mm,
# window 24 x 48 x 48, 6500 it., lr 3e-3, seed 0) with ONE change: half the training cases (the first 29 of the 58
# of splits.json; validation and test cases unchanged). Paired with coarse seed 0 (58 cases: real CT 39.0 / 36.7).
# No decision rides on it (a study row); real CT read once at the end.
set -e
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runaff/backend OMP_NUM_THREADS=1
cd /work/runaff
SEED=0 COUNT=96 SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=6500 METHOD=fully DEVICE=cpu WORKERS=1 \
  EXTRA="--set val_every=250 --patch 24 48 48 --set val_roi=[24,48,48]" \
  nice -n 5 bash benchmarks/synthetic_model.sh /work/syn13/half_s0
