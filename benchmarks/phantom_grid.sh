#!/usr/bin/env bash
# The phantom 10% comparison table (docs/results/): phantoms -> cache -> `dvcl experiment` -> results.md/csv/png.
#
#   bash benchmarks/phantom_grid.sh WORK [extra `dvcl experiment` arguments]
#
# Environment (defaults in brackets):
#   METHODS     [all 15 methods of the paper's tables + fully]   SEEDS [0,1,2]   FRACTIONS [0.1]
#   ITERATIONS  [300: the quick profile's own]   JOBS [1: runs at once, each its own process]   DEVICE [auto]   WORKERS [1]
#   DVCL        [python -m dvcl]  the command line to call
# On one GPU, JOBS=16 with the MPS daemon running (`nvidia-cuda-mps-control -d`, so the runs' kernels overlap)
# trained the 48 runs of docs/results/phantom_f10_quick in 5.5 minutes on an H100.
# Data: 30 labeled abdominal phantoms (split 18 train / 6 val / 6 test; 10 % of 18 = 2 labeled) plus 20
# unlabeled ones, resampled to 2.5 x 2.5 x 5 mm so the quick profile's 32x64x64 patch sees most of an abdomen.
set -euo pipefail
WORK=${1:?usage: phantom_grid.sh WORK [dvcl experiment args]}
shift
# every method of the catalog (dvcl/methods/catalog.py), in table order
METHODS=${METHODS:-$(python -c 'from dvcl.methods.catalog import method_names; print(",".join(method_names()))')}
DVCL=${DVCL:-python -m dvcl}
mkdir -p "$WORK"
if [ ! -f "$WORK/cache/dataset.json" ]; then
  $DVCL --progress none phantom "$WORK/phantoms" --labeled 30 --unlabeled 20 --seed 0
  $DVCL --progress none prepare "$WORK/phantoms" -o "$WORK/cache" --spacing 2.5 2.5 5.0 --workers "${WORKERS_PREPARE:-8}"
fi
$DVCL --progress none experiment --data "$WORK/cache" --methods "$METHODS" --fractions "${FRACTIONS:-0.1}" \
  --seeds "${SEEDS:-0,1,2}" --profile quick --iterations "${ITERATIONS:-300}" --device "${DEVICE:-auto}" \
  --workers "${WORKERS:-1}" --jobs "${JOBS:-1}" --keep-going --out "$WORK/grid" "$@"
