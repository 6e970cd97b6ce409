#!/usr/bin/env bash
# protocol.md: the no-lesion twins of the fatty-pancreas study's 120 cases, and of its 24 fresh gate cases
set -eu
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
B=/work/syna/les
mkdir -p $B/ft/all
cd /work/main
ARGS="--organ-sizes adult --fatty-pancreas --no-lesions"
[ -f $B/ft/all/synth/dataset.json ] || python -m dvcl --progress none synth $B/ft/all/synth --count 120 --seed 0 \
  --workers 2 --resume $ARGS > $B/gen.log 2>&1
G=$B/fresh
[ -f $G/synth/dataset.json ] || python -m dvcl --progress none synth $G/synth --count 24 --seed 101 --workers 2 \
  --resume $ARGS > $G.gen.log 2>&1
mkdir -p $G/img $G/lab
for f in $G/synth/labeled/images/*.nii.gz; do n=$(basename $f)
  ln -sfn $f $G/img/$n; ln -sfn $G/synth/labeled/labels/$n $G/lab/$n; done
echo "gen rc=0 $(date -u +%H:%M)" >> $B/done.txt
