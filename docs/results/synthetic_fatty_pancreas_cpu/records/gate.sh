#!/usr/bin/env bash
# gates of protocol.md: MODEL NAME GATE_DIR -> GATE_DIR/eval_NAME
#   GATE_DIR /work/syna/fat/gate: the 24 validation cases in their fatty-pancreas form (gate 1a)
#   GATE_DIR /work/syna/size/gate: the organ-size study's 24 adult-size gate cases (gate 1b)
set -eu
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runcand/backend OMP_NUM_THREADS=1
M=$1; N=$2; G=$3
cd /work/runcand
python -m dvcl --progress none segment $G/img --model "$M" -o $G/pred_$N --overwrite
python -m dvcl --progress none evaluate $G/pred_$N $G/lab --preset flare22 --out $G/eval_$N --name "$N" --no-plots --no-distances --overwrite
