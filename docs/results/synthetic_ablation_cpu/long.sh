#!/usr/bin/env bash
# follow-up of the CPU ablation: all vs no_texture, seed 0, the same 40-case data, 6500 iterations (not 2000)
set -u
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runsyna/backend OMP_NUM_THREADS=1
cd /work/runsyna
v=$1; [ "$v" = all ] && a="" || a=$v
ABLATE=$a COUNT=40 SEED=0 SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=6500 METHOD=fully DEVICE=cpu WORKERS=1 \
  POSTPROCESS=0 EXTRA="--set val_every=500 --patch 24 48 48 --set val_roi=[24,48,48]" \
  bash benchmarks/synthetic_model.sh /work/syna/long > /work/syna/long_$v.txt 2>&1
echo "long $v rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
