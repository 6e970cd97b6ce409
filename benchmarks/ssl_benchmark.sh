#!/usr/bin/env bash
# A semi-supervised benchmark that can tell methods apart (issue 12; docs/results/ssl_benchmark.md).
#
#   bash benchmarks/ssl_benchmark.sh size WORK   # first: fully + labeled-only, seed 0: does the budget separate them?
#   bash benchmarks/ssl_benchmark.sh cpu WORK [extra `dvcl experiment` arguments]   # DVCL, CPS, labeled-only, fully
#   bash benchmarks/ssl_benchmark.sh gpu WORK [extra `dvcl experiment` arguments]   # every method of the catalog
#
# Data: 20 labeled cardiac phantoms (7 MM-WHS structures, random shape, size, position, contrast), prepared with
# the mmwhs preset at 2 x 2 x 2 mm. The cache's 6:2:2 split gives the paper's MM-WHS protocol: 12 training cases
# (10 % = 2 labeled : 10 unlabeled, the preset's paper count), 4 validation cases (checkpoint selection) and
# 4 test cases (read once per run). Quick profile (patch 32x64x64, U-Net 8..64, batch 2+2, AdamW 3e-3, poly).
# Defaults are sized so that fully supervised reaches >= 80 % mean Dice on the validation phantoms and labeled-only
# at 10 % stays >= 10 points below it (docs/results/ssl_benchmark.md: pilot and cost).
#
# Environment (defaults in brackets):
#   ITERATIONS [1000]   SEEDS [0,1,2]   FRACTIONS [0.1]   JOBS [size/cpu 2, gpu 16]   DEVICE [cpu / cuda]
#   METHODS    [cpu: supervised,cps,dvcl,fully; gpu: the catalog]     WORKERS [1]   DVCL [python3 -m dvcl]
#   TAG        [none] a name for the grid folder (WORK/grid_<variant>_<TAG>_i<ITERATIONS>), e.g. one per setting
# --tuned-on validation: DVCL's and CPS's co-training schedule (lambda_cps, lambda_c ramps) was chosen on this
# benchmark's validation split (docs/results/ssl_benchmark.md, "Choosing the schedules"); a later argument wins.
# Resumable: run the same command again and finished runs are skipped, interrupted ones resume from their last
# checkpoint (dvcl experiment). The table is WORK/grid_<variant>/results.md (+ results.csv, runs.csv).
set -euo pipefail
VARIANT=${1:?usage: ssl_benchmark.sh size|cpu|gpu WORK [dvcl experiment args]}
WORK=${2:?usage: ssl_benchmark.sh size|cpu|gpu WORK [dvcl experiment args]}
shift 2
DVCL=${DVCL:-python3 -m dvcl}
case "$VARIANT" in
  size) METHODS=${METHODS:-supervised,fully}; ITERATIONS=${ITERATIONS:-1000}; JOBS=${JOBS:-2}
       DEVICE=${DEVICE:-cpu}; SEEDS=${SEEDS:-0} ;;
  cpu) METHODS=${METHODS:-supervised,cps,dvcl,fully}; ITERATIONS=${ITERATIONS:-1000}; JOBS=${JOBS:-2}
       DEVICE=${DEVICE:-cpu} ;;
  gpu) METHODS=${METHODS:-$(python3 -c 'from dvcl.methods.catalog import method_names; print(",".join(method_names()))')}
       ITERATIONS=${ITERATIONS:-1000}; JOBS=${JOBS:-16}; DEVICE=${DEVICE:-cuda} ;;
  *) echo "ssl_benchmark.sh: variant must be size, cpu or gpu, got '$VARIANT'" >&2; exit 2 ;;
esac
mkdir -p "$WORK"
if [ ! -f "$WORK/phantoms/dataset.json" ]; then
  $DVCL --progress none phantom "$WORK/phantoms" --kind cardiac --labeled 20 --unlabeled 0 --seed 0 --raw-values
fi
if [ ! -f "$WORK/cache/dataset.json" ]; then
  $DVCL --progress none prepare "$WORK/phantoms" -o "$WORK/cache" --spacing 2.0 2.0 2.0 \
    --workers "${WORKERS_PREPARE:-2}"
fi
$DVCL --progress none experiment --data "$WORK/cache" --methods "$METHODS" --fractions "${FRACTIONS:-0.1}" \
  --seeds "${SEEDS:-0,1,2}" --profile quick --iterations "$ITERATIONS" --device "$DEVICE" \
  --workers "${WORKERS:-1}" --jobs "$JOBS" --keep-going --tuned-on validation --set val_every=100 \
  --out "$WORK/grid_${VARIANT}${TAG:+_$TAG}_i${ITERATIONS}" "$@"
if [ "$VARIANT" = size ]; then
  # the benchmark's two criteria on this budget, judged on the VALIDATION split (each run's best validation Dice),
  # so that choosing ITERATIONS never looks at the test split
  python3 - "$WORK/grid_${VARIANT}${TAG:+_$TAG}_i${ITERATIONS}" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
val = {}
for run in out.glob("*_s0/run.json"):
    info = json.loads(run.read_text())
    val[info["method"]] = 100 * float(info.get("best_val_dice") or 0.0)
full, lab = val.get("fully", 0.0), val.get("supervised", 0.0)
print(f"validation Dice: fully supervised {full:.1f} (needs >= 80), labeled-only {lab:.1f} (needs <= {full - 10:.1f})")
print("budget OK" if full >= 80 and full - lab >= 10 else "budget NOT OK: change ITERATIONS and size again")
PY
fi
