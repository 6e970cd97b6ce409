#!/usr/bin/env bash
# issue 13: site adaptation from the shipped synthetic_abdomen (real-CT mean Dice 44.0): dvcl adapt defaults (300 its,
# lr 3e-4, no flips), 40 of its synthetic training cases as labeled data, and as the only unlabeled scan
#   real:    the real abdomen CT of tests/data (TRANSDUCTIVE)      control: a held-out synthetic CT (synth_abd_005, test split)
# both at once (one core each), then each scored once on the real CT. Worktree /work/runheart (f7693eb). Resumable.
set -e
export PATH=.venv/bin:$PATH PYTHONPATH=/work/runheart/backend OMP_NUM_THREADS=1
A=/work/syn13/adapt2; R=tests/data/abdomen_ct_3mm
cd /work/runheart
run() {
  v=$1
  [ -f $A/$v/model.json ] || python -m dvcl --progress none adapt --model synthetic_abdomen --unlabeled $A/unl_$2 -o $A/$v \
      --labeled $A/lab --iterations 300 --device cpu --workers 1 --seed 0
  python -m dvcl --progress none segment $R/image.nii.gz --model $A/$v -o $A/${v}_pred.nii.gz --device cpu --overwrite
  python -m dvcl --progress none evaluate $A/${v}_pred.nii.gz $R/label_flare22.nii.gz --preset flare22 \
      --out $A/${v}_eval --name "synthetic_abdomen adapted ($v)" --no-plots --overwrite
}
run real real > $A/real.log 2>&1 &
run control synth > $A/control.log 2>&1 &
wait
