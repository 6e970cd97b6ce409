#!/usr/bin/env bash
# docs/results/synthetic_organ_sizes_cpu/protocol.md, stage 2: synthetic_wide_cpu/records/train.sh on the adult-size 120-case set, seed $1
# (data: gen2.sh). Then real2.sh reads the real CT once per model.
set -u
s=$1; C=/work/syna/size/wide/cache; OUT=/work/syna/size/wide/s$s
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runwide/backend OMP_NUM_THREADS=1
cd /work/runwide
D="nice -n 5 python -m dvcl --progress none"
mkdir -p $OUT
if [ ! -f $OUT/run/run.json ] || ! grep -q '"status": "finished"' $OUT/run/run.json; then
  if [ -f $OUT/run/checkpoints/last_state.pt ]; then $D train --resume $OUT/run --device cpu
  else $D train --data $C --out $OUT/run --method fully --labeled-fraction 1.0 --profile quick --iterations ${ITERATIONS:-7000} \
      --device cpu --seed $s --set flip_prob=0.0 --set foreground_oversample=0.33 --set oversample_mode=class \
      --set val_every=500 --set val_cases=8 --patch 24 48 48 --set val_roi=[24,48,48] --set network.channels=[16,32,64,128]
  fi
fi
[ -f $OUT/model/model.json ] || $D export $OUT/run -o $OUT/model
grep -q '"postprocessing"' $OUT/model/model.json || $D postprocess $OUT/model --data $C -o $OUT/model --device cpu
echo "size_wide_s$s rc=$? $(date -u +%H:%M)" >> /work/syna/size/done.txt
