#!/usr/bin/env bash
# docs/results/synthetic_organ_sizes_cpu/protocol.md, addendum: synthetic_finetune_cpu/records/candidate.sh on the
# adult-size twin of its 120 cases (generated with main at 37c8724, since the frozen trainer's `dvcl synth` has no
# --organ-sizes), 3000 iterations
set -u
W=/work/syna/size/ft
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
mkdir -p $W/all
[ -f $W/all/synth/dataset.json ] || (cd /work/main && python -m dvcl --progress none synth $W/all/synth --count 120 --seed 0 \
  --workers 2 --resume --organ-sizes adult) > $W.gen.log 2>&1
export PYTHONPATH=/work/runcand/backend
cd /work/runcand
COUNT=120 SEED=0 SPACING="2.5 2.5 5.0" PROFILE=quick ITERATIONS=3000 METHOD=fully DEVICE=cpu WORKERS=2 \
  EXTRA="--set val_every=250 --lr 0.001 --set init_model=/work/runcand/backend/dvcl/models/synthetic_abdomen" \
  nice -n 5 bash benchmarks/synthetic_model.sh $W > $W.log 2>&1
echo "ft rc=$? $(date -u +%H:%M)" >> /work/syna/size/done.txt
