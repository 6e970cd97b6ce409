#!/usr/bin/env bash
# validation gate of docs/results/synthetic_wide_cpu/protocol.md: MODEL NAME -> /work/syna/gate/eval_NAME
set -eu
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runwide/backend OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
M=$1; N=$2; G=/work/syna/gate
python -m dvcl --progress none segment $G/img --model "$M" -o $G/pred_$N --overwrite
python -m dvcl --progress none evaluate $G/pred_$N $G/lab --preset flare22 --out $G/eval_$N --name "$N" --no-plots --no-distances --overwrite
