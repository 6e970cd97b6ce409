#!/usr/bin/env bash
# generate the adult-organ-size twins of the 40-case caches w (seed 0), w_s1, w_s2, then prepare at 4 x 4 x 6 mm
set -eu
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
cd /work/main
for s in 0 1 2; do
  out=/work/syna/size/s$s/all
  mkdir -p $out
  [ -f $out/synth/dataset.json ] || python -m dvcl --progress none synth $out/synth --count 40 --seed $s --workers 2 --resume --organ-sizes adult
  [ -f $out/cache/dataset.json ] || python -m dvcl --progress none prepare $out/synth -o $out/cache --preset flare22 --spacing 4.0 4.0 6.0 --workers 2
  echo "gen s$s done $(date -u +%H:%M)"
done
