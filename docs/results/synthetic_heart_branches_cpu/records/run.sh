#!/usr/bin/env bash
# docs/results/synthetic_heart_branches_cpu/protocol.md: 48 cardiac cases of the new generator, then training seeds 0 and 1
set -u
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runheart/backend OMP_NUM_THREADS=1
cd /work/runheart
H=/work/syna/heart; mkdir -p $H/s0/heart_all $H/s1/heart_all
D="nice -n 5 python -m dvcl --progress none"
[ -f $H/s0/heart_all/synth/dataset.json ] || $D synth $H/s0/heart_all/synth --kind cardiac --count 48 --seed 0 --workers 2 --resume
[ -f $H/s0/heart_all/cache/dataset.json ] || $D prepare $H/s0/heart_all/synth -o $H/s0/heart_all/cache --preset mmwhs --spacing 2.5 2.5 2.5 --workers 2
ln -sfn $H/s0/heart_all/synth $H/s1/heart_all/synth; ln -sfn $H/s0/heart_all/cache $H/s1/heart_all/cache
echo "heart data $(date -u +%H:%M)" >> /work/syna/done.txt
for s in 0 1; do
  KIND=cardiac COUNT=48 SEED=0 SPACING="2.5 2.5 2.5" PROFILE=quick ITERATIONS=4000 METHOD=fully DEVICE=cpu WORKERS=1 \
    OVERSAMPLE=0 FLIP_PROB=0 POSTPROCESS=0 EXTRA="--set val_every=250 --seed $s" \
    nice -n 5 bash benchmarks/synthetic_model.sh $H/s$s > $H/s$s.log 2>&1 &
done
wait
echo "heart runs done $(date -u +%H:%M)" >> /work/syna/done.txt
