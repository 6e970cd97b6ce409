#!/usr/bin/env bash
# issue 13 randomisation ablation on the CPU (session 11): one queue of variants, run one after the other.
# Every variant: 40 synthetic cases (dvcl synth --seed SEED, one switch off), 4 x 4 x 6 mm, window 24 x 48 x 48,
# U-Net 8..64 fully supervised from scratch, ITERATIONS [2000] iterations, seed SEED [0], no post-processing;
# real CT scored once.
#   queue.sh all texture resolution ...     # the study: /work/syna/w/<variant>
#   SEED=1 queue.sh all                     # the reference's replicates: /work/syna/w_s1/all
#   ITERATIONS=6500 W=/work/syna/long queue.sh all texture
#                                           # the follow-up; it ran on the study's data: synth/ and cache/ of
#                                           # /work/syna/long/<variant> symlinked to /work/syna/w/<variant> first
#   SEED=1 ITERATIONS=6500 W=/work/syna/long_s1 queue.sh all
#                                           # its seed replicate (session 12): synth/ and cache/ symlinked to
#                                           # /work/syna/w_s1/all first
# (the study ran as two queues side by side, one core each; the replicates after them)
set -u
SEED=${SEED:-0}; ITERATIONS=${ITERATIONS:-2000}
W=${W:-/work/syna/w$([ "$SEED" != 0 ] && echo "_s$SEED")}
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runsyna/backend OMP_NUM_THREADS=1
cd /work/runsyna
for v in "$@"; do
  [ "$v" = all ] && a="" || a=$v
  ABLATE=$a COUNT=40 SEED=$SEED SPACING="4.0 4.0 6.0" PROFILE=quick ITERATIONS=$ITERATIONS METHOD=fully DEVICE=cpu \
    WORKERS=1 POSTPROCESS=0 EXTRA="--set val_every=500 --patch 24 48 48 --set val_roi=[24,48,48]" \
    nice -n 5 bash benchmarks/synthetic_model.sh "$W" > "$W.$v.log" 2>&1
  echo "$W $v rc=$? $(date -u +%H:%M)" >> /work/syna/done.txt
done
