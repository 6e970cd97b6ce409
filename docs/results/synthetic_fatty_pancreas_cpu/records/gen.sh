#!/usr/bin/env bash
# protocol.md: the fatty-pancreas twins of the organ-size study's 120 cases (main at the protocol's commit)
set -eu
W=/work/syna/fat/ft
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
mkdir -p $W/all /work/syna/fat/init
cp -rn /work/main/backend/dvcl/models/synthetic_abdomen /work/syna/fat/init/
cd /work/main
[ -f $W/all/synth/dataset.json ] || python -m dvcl --progress none synth $W/all/synth --count 120 --seed 0 \
  --workers 2 --resume --organ-sizes adult --fatty-pancreas > /work/syna/fat/gen.log 2>&1
echo "gen rc=$? $(date -u +%H:%M)" >> /work/syna/fat/done.txt
# gate 1a's cases: the 24 validation cases of the split (the organ-size gate set's names) in their new form
G=/work/syna/fat/gate
mkdir -p $G/img $G/lab
for f in /work/syna/size/gate/img/*.nii.gz; do
  n=$(basename $f)
  ln -sfn $W/all/synth/labeled/images/$n $G/img/$n
  ln -sfn $W/all/synth/labeled/labels/$n $G/lab/$n
done
