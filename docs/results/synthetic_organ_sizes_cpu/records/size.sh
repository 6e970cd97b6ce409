#!/usr/bin/env bash
# docs/results/synthetic_organ_sizes_cpu/protocol.md, stage 1: the capacity study's cap.sh with the adult-size twins
# of its 40-case caches (made by gen.sh with main at 83fb281), seed $1
set -u
s=$1; W=/work/syna/size/cap_s$s; src=/work/syna/size/s$s/all
mkdir -p $W/all && ln -sfn $src/synth $W/all/synth && ln -sfn $src/cache $W/all/cache
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runcand/backend OMP_NUM_THREADS=1
cd /work/runcand
COUNT=40 SEED=$s SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=2000 METHOD=fully DEVICE=cpu WORKERS=1 POSTPROCESS=0 \
  EXTRA="--set val_every=500 --patch 24 48 48 --set val_roi=[24,48,48] --set network.channels=[16,32,64,128]" \
  nice -n 5 bash benchmarks/synthetic_model.sh $W > $W.log 2>&1
echo "size_s$s rc=$? $(date -u +%H:%M)" >> /work/syna/size/done.txt
