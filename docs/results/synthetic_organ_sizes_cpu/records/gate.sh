#!/usr/bin/env bash
# gates of the addendum of docs/results/synthetic_organ_sizes_cpu/protocol.md (synthetic_finetune_cpu's
# validation_gate.sh with the gate folder as an argument): MODEL NAME GATE_DIR -> GATE_DIR/eval_NAME
#   GATE_DIR /work/syna/size/gate: the adult-size twins of the 24 validation cases (gate 1)
#   GATE_DIR /work/syna/gate: the session-12 gate set itself, phantom sizes (reported)
set -eu
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runcand/backend OMP_NUM_THREADS=1
M=$1; N=$2; G=$3
cd /work/runcand
python -m dvcl --progress none segment $G/img --model "$M" -o $G/pred_$N --overwrite
python -m dvcl --progress none evaluate $G/pred_$N $G/lab --preset flare22 --out $G/eval_$N --name "$N" --no-plots --no-distances --overwrite
