#!/usr/bin/env bash
# issue 13 randomisation ablation on the CPU (session 11): one queue of variants, run one after the other.
# Every variant: 40 synthetic cases (dvcl synth --seed SEED, one switch off), 4 x 4 x 6 mm, window 24 x 48 x 48,
# U-Net 8..64 fully supervised from scratch, 2000 iterations, seed SEED, no post-processing; real CT scored once.
#   queue.sh all texture resolution ...     # SEED=0 (default): /work/syna/w/<variant>
#   SEED=1 queue.sh all                     # the replicate of the reference: /work/syna/w_s1/all
# (run as two queues side by side, one core each; the replicate after the second queue)
set -u
SEED=${SEED:-0}
W=/work/syna/w; LOG=/work/syna/log_; TAG=""
if [ "$SEED" != 0 ]; then W=/work/syna/w_s$SEED; LOG=/work/syna/log_s${SEED}_; TAG="s$SEED "; fi
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runsyna/backend OMP_NUM_THREADS=1
cd /work/runsyna
for v in "$@"; do
  [ "$v" = all ] && a="" || a=$v
  ABLATE=$a COUNT=40 SEED=$SEED SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=2000 METHOD=fully DEVICE=cpu WORKERS=1 \
    POSTPROCESS=0 EXTRA="--set val_every=500 --patch 24 48 48 --set val_roi=[24,48,48]" \
    nice -n 5 bash benchmarks/synthetic_model.sh "$W" > "$LOG$v.txt" 2>&1
  echo "$TAG$v rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
done
