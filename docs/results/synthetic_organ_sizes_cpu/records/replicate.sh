#!/usr/bin/env bash
# docs/results/synthetic_organ_sizes_cpu/protocol.md, replicate: candidate.sh with training seed 1 on the same data,
# split (cache/splits.json, made by `dvcl prepare` with its own seed 0) and initial weights
set -u
W=/work/syna/size/ft_s1; src=/work/syna/size/ft/all
mkdir -p $W/all && ln -sfn $src/synth $W/all/synth && ln -sfn $src/cache $W/all/cache
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1 PYTHONPATH=/work/runcand/backend
cd /work/runcand
COUNT=120 SEED=1 SPACING="2.5 2.5 5.0" PROFILE=quick ITERATIONS=3000 METHOD=fully DEVICE=cpu WORKERS=2 \
  EXTRA="--set val_every=250 --lr 0.001 --set init_model=/work/runcand/backend/dvcl/models/synthetic_abdomen" \
  nice -n 5 bash benchmarks/synthetic_model.sh $W > $W.log 2>&1
echo "ft_s1 rc=$? $(date -u +%H:%M)" >> /work/syna/size/done.txt
