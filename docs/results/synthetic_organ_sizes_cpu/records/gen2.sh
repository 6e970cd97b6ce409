#!/usr/bin/env bash
# stage 2 data: the adult-size twin of the 120-case set of synthetic_wide_cpu (dvcl synth --count 120 --seed 0), 4 x 4 x 6 mm
set -eu
export PATH=/work/main/.venv/bin:$PATH OMP_NUM_THREADS=1
cd /work/main
W=/work/syna/size/wide; mkdir -p $W
[ -f $W/synth/dataset.json ] || python -m dvcl --progress none synth $W/synth --count 120 --seed 0 --workers 2 --resume --organ-sizes adult
[ -f $W/cache/dataset.json ] || python -m dvcl --progress none prepare $W/synth -o $W/cache --preset flare22 --spacing 4.0 4.0 6.0 --workers 2
echo "gen2 done $(date -u +%H:%M)"
