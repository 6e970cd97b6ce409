#!/usr/bin/env bash
# docs/results/synthetic_wide_cpu/protocol.md: U-Net 16..128 on 4 x 4 x 6 mm, the 120-case current-generator set, training seed $1.
# Stops after export + post-processing: gate 1 (synthetic validation) comes before the real CT (gate.sh, then real.sh).
set -u
s=$1; C=/work/syna/wide/cache; OUT=/work/syna/wide/s$s
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
echo "wide_s$s rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
