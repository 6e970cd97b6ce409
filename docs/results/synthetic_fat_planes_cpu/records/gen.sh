#!/usr/bin/env bash
# protocol.md: the fat-plane twins of the fatty-pancreas study's 120 cases (main at the protocol's commit), then the
# fresh gate cases (seed 202, with and without fat planes) in the gate layout (img/, lab/)
set -eu
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
B=/work/syna/fp
mkdir -p $B/ft/all
cd /work/main
[ -f $B/ft/all/synth/dataset.json ] || python -m dvcl --progress none synth $B/ft/all/synth --count 120 --seed 0 \
  --workers 2 --resume --organ-sizes adult --fatty-pancreas --fat-planes > $B/gen.log 2>&1
echo "gen rc=$? $(date -u +%H:%M)" >> $B/done.txt
for v in planes plain; do
  G=$B/fresh_$v; args="--organ-sizes adult --fatty-pancreas"; [ $v = planes ] && args="$args --fat-planes"
  [ -f $G/synth/dataset.json ] || python -m dvcl --progress none synth $G/synth --count 24 --seed 202 --workers 2 \
    --resume $args > $G.gen.log 2>&1
  mkdir -p $G/img $G/lab
  for f in $G/synth/labeled/images/*.nii.gz; do n=$(basename $f)
    ln -sfn $f $G/img/$n; ln -sfn $G/synth/labeled/labels/$n $G/lab/$n; done
done
echo "fresh rc=$? $(date -u +%H:%M)" >> $B/done.txt
