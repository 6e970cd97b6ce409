#!/usr/bin/env bash
# issue 13: site adaptation measured. The CPU pilot model (48 synthetic CTs, 3000 its; real-CT mean Dice 12.1) adapted
# with `dvcl adapt` (DVCL, 300 its at lr 3e-4; synthetic labeled = the pilot's 48 cases) on
#   real:    the real abdomen CT of tests/data as the ONLY unlabeled scan (its score is TRANSDUCTIVE)
#   control: one synthetic CT (not among the 48) as the unlabeled scan: the same extra training without the real scan
# then each scored once on the real abdomen CT. Frozen worktree /work/runsyn (de2b58c). Resumable.
set -e
export PATH=.venv/bin:$PATH PYTHONPATH=/work/runsyn/backend OMP_NUM_THREADS=1
A=/work/syn13/adapt; M=/work/syn13/q48/all/model; R=tests/data/abdomen_ct_3mm
cd /work/runsyn
for v in real control; do
  u=$A/unl_real; [ $v = control ] && u=$A/unl_synth
  [ -f $A/$v/model.json ] || nice -n 5 python -m dvcl --progress none adapt --model $M --unlabeled $u -o $A/$v \
      --labeled /work/syn13/q48/all/synth --iterations 300 --device cpu --workers 1 --seed 0
  python -m dvcl --progress none segment $R/image.nii.gz --model $A/$v -o $A/${v}_pred.nii.gz --device cpu --overwrite
  python -m dvcl --progress none evaluate $A/${v}_pred.nii.gz $R/label_flare22.nii.gz --preset flare22 \
      --out $A/${v}_eval --name "adapted ($v)" --no-plots --overwrite
done
