#!/usr/bin/env bash
# issue 13 session 12: the default candidate of docs/results/synthetic_finetune_cpu/protocol.md
set -u
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runcand/backend OMP_NUM_THREADS=1
cd /work/runcand
COUNT=120 SEED=0 SPACING="2.5 2.5 5.0" PROFILE=quick ITERATIONS=6000 METHOD=fully DEVICE=cpu WORKERS=1 \
  EXTRA="--set val_every=250 --lr 0.001 --set init_model=/work/runcand/backend/dvcl/models/synthetic_abdomen" \
  nice -n 5 bash benchmarks/synthetic_model.sh /work/syna/cand > /work/syna/cand.log 2>&1
echo "cand rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
