#!/usr/bin/env bash
# protocol.md: candidate (SEED=0, /work/syna/fat/ft) or replicate (SEED=1, /work/syna/fat/ft_s1: same data, split and
# initial weights); ../synthetic_organ_sizes_cpu/records/candidate.sh with the shipped model as initialisation.
# BASE (default /work/syna/fat): another study's folder whose ft/all/synth holds its data (the liver-lesion study)
set -u
SEED=${SEED:-0}; BASE=${BASE:-/work/syna/fat}
src=$BASE/ft/all
W=$BASE/ft; [ "$SEED" = 0 ] || W=$BASE/ft_s$SEED
mkdir -p $W/all
[ "$SEED" = 0 ] || { ln -sfn $src/synth $W/all/synth; }
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1 PYTHONPATH=/work/runcand/backend
cd /work/runcand
if [ "$SEED" != 0 ]; then  # the replicate waits for the candidate's cache (one split for both)
  while [ ! -f $src/cache/dataset.json ]; do sleep 20; done; ln -sfn $src/cache $W/all/cache
fi
COUNT=120 SEED=$SEED SPACING="2.5 2.5 5.0" PROFILE=quick ITERATIONS=3000 METHOD=fully DEVICE=cpu WORKERS=2 \
  EXTRA="--set val_every=250 --lr 0.001 --set init_model=/work/syna/fat/init/synthetic_abdomen" \
  nice -n 5 bash benchmarks/synthetic_model.sh $W > $W.log 2>&1
echo "ft_s$SEED rc=$? $(date -u +%H:%M)" >> $BASE/done.txt
