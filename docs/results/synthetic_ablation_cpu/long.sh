#!/usr/bin/env bash
# Follow-up of the CPU ablation: one variant (all | texture | ...) trained 6500 iterations instead of 2000.
#   long.sh all; long.sh texture      # seed 0: /work/syna/long/<variant>, on the ablation's caches (symlinked
#                                     # synth/ and cache/ from /work/syna/w/<variant>, so nothing is regenerated)
#   SEED=1 long.sh all                # another seed: /work/syna/long_s1/all, its 40 cases generated first
set -u
SEED=${SEED:-0}
W=/work/syna/long; [ "$SEED" != 0 ] && W=/work/syna/long_s$SEED
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runsyna/backend OMP_NUM_THREADS=1
cd /work/runsyna
v=$1; [ "$v" = all ] && a="" || a=$v
ABLATE=$a COUNT=40 SEED=$SEED SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=6500 METHOD=fully DEVICE=cpu WORKERS=1 \
  POSTPROCESS=0 EXTRA="--set val_every=500 --patch 24 48 48 --set val_roi=[24,48,48]" \
  bash benchmarks/synthetic_model.sh "$W" > "$W.$v.txt" 2>&1
echo "long s$SEED $v rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
