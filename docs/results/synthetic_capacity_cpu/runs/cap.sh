#!/usr/bin/env bash
# docs/results/synthetic_capacity_cpu/protocol.md: U-Net 16..128, the ablation's `all` recipe, seed $1
set -u
s=$1; W=/work/syna/cap_s$s; src=/work/syna/w$([ "$s" != 0 ] && echo "_s$s")/all
mkdir -p $W/all && ln -sfn $src/synth $W/all/synth && ln -sfn $src/cache $W/all/cache
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runcand/backend OMP_NUM_THREADS=1
cd /work/runcand
COUNT=40 SEED=$s SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=2000 METHOD=fully DEVICE=cpu WORKERS=1 POSTPROCESS=0 \
  EXTRA="--set val_every=500 --patch 24 48 48 --set val_roi=[24,48,48] --set network.channels=[16,32,64,128]" \
  nice -n 5 bash benchmarks/synthetic_model.sh $W > $W.log 2>&1
echo "cap_s$s rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
