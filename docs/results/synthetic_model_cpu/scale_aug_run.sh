#!/usr/bin/env bash
# issue 13, session 8: does scale augmentation transfer? The coarse-grid recipe from scratch (coarse.sh / coarse_s1.sh:
# 4 x 4 x 6 mm, window 24 x 48 x 48, 6500 it., lr 3e-3, seed 0) with ONE change: affine_prob 0.5 (scale 1 +- 0.25 per
# axis, in-plane rotation +- 15 deg; nnU-Net's spatial augmentation). Paired with coarse seed 0 (real CT mean 39.0 / 36.7
# for seeds 0 / 1). Selection on synthetic validation as always; the real CT read once at the end.
# Rule stated before reading the real CT: scale augmentation goes into dvcl.synthetic_training if the real-CT mean rises
# on both seeds (a decision taken on the evaluation scan: reported as such).
set -e
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runaff/backend OMP_NUM_THREADS=1
cd /work/runaff
SEED=0 COUNT=96 SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=6500 METHOD=fully DEVICE=cpu WORKERS=1 \
  EXTRA="--set val_every=250 --patch 24 48 48 --set val_roi=[24,48,48] --set affine_prob=0.5 --set scale_range=0.25 --set rotate_deg=15" \
  nice -n 5 bash benchmarks/synthetic_model.sh /work/syn13/aff_s0
