#!/usr/bin/env bash
# protocol.md, addendum: the fresh gate cases (24 with the option, their 24 twins without), in the gate layout
set -eu
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
cd /work/main
for v in fatty plain; do
  G=/work/syna/fat/fresh_$v; args="--organ-sizes adult"; [ $v = fatty ] && args="$args --fatty-pancreas"
  [ -f $G/synth/dataset.json ] || python -m dvcl --progress none synth $G/synth --count 24 --seed 101 --workers 1 \
    --resume $args > $G.gen.log 2>&1
  mkdir -p $G/img $G/lab
  for f in $G/synth/labeled/images/*.nii.gz; do n=$(basename $f)
    ln -sfn $f $G/img/$n; ln -sfn $G/synth/labeled/labels/$n $G/lab/$n; done
done
