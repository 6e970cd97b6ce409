#!/usr/bin/env bash
# Issue 13: train an abdominal (FLARE22) model on domain-randomised synthetic CT only, then score it ONCE on the
# real abdomen CT in tests/data (never used for training, selection or tuning: selection is on the synthetic
# validation split).
#
#   bash benchmarks/synthetic_model.sh WORK                    # everything randomised
#   ABLATE=noise bash benchmarks/synthetic_model.sh WORK       # the same with one randomisation off (dvcl synth --no-noise)
#   COUNT=4 ITERATIONS=5 PROFILE=quick bash benchmarks/synthetic_model.sh /tmp/smoke   # a smoke run on a CPU
#
#   KIND=cardiac bash benchmarks/synthetic_model.sh WORK         # the heart (MM-WHS labels), checked on the chest
#                                                                # CTA of tests/data: whole heart, aorta, PA
#
# Environment (defaults in brackets): KIND [abdomen | cardiac]  COUNT [200 synthetic cases]  SEED [0: training seed]
#   DATA_SEED [SEED: the `dvcl synth` data-set seed, so several training seeds can share one data set]
#   SPACING ["1.5 1.5 3.0" mm]
#   PROFILE [paper]  ITERATIONS [20000]  METHOD [supervised]  DEVICE [auto]  WORKERS [all cores]  ABLATE [none]
#   SYNTH_ARGS [none: more `dvcl synth` arguments, e.g. "--organ-sizes adult --fatty-pancreas --fat-planes" (the shipped
#   synthetic_abdomen's data)]
#   DVCL [python3 -m dvcl]  EXTRA [more `dvcl train` arguments, e.g. "--set val_every=1000"]
#   FLIP_PROB, OVERSAMPLE [dvcl.synthetic_training's flip_prob (0: no random flips) and foreground_oversample (0.33,
#   crops centred on an organ drawn uniformly: oversample_mode=class); the module says why]
#   PYTHON [python3: reads those defaults; needs dvcl importable, as DVCL does]
#   TRAIN_SECONDS [none: a wall-clock limit for training; at the limit the run stops with its checkpoint saved
#   and the best validated (else last) weights are exported and scored, so a short lease still returns a model]
#   TRAIN_UNTIL [none: the same limit as a point in time, seconds since the epoch, e.g. the end of a GPU lease]
#   POSTPROCESS [1: after export, `dvcl postprocess` chooses on the synthetic validation split the structures whose
#   largest connected component alone is kept (nnU-Net's); 0: none]
# Resumable: each step is skipped when its output exists; training resumes from its last checkpoint.
# Output: WORK/<variant>/real_ct/report.md (per-organ Dice on the real CT) and WORK/<variant>/model (the package);
# `python benchmarks/synthetic_table.py WORK -o T.md` puts every variant in one table (the randomisation study).
set -euo pipefail
WORK=${1:?usage: synthetic_model.sh WORK}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DVCL=${DVCL:-python3 -m dvcl}
COUNT=${COUNT:-200}; SEED=${SEED:-0}; DATA_SEED=${DATA_SEED:-$SEED}; SPACING=${SPACING:-1.5 1.5 3.0}
PROFILE=${PROFILE:-paper}; ITERATIONS=${ITERATIONS:-20000}; METHOD=${METHOD:-supervised}; DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-$(nproc)}; ABLATE=${ABLATE:-}; PYTHON=${PYTHON:-python3}
FLIP_PROB=${FLIP_PROB:-$($PYTHON -m dvcl.synthetic_training flip_prob)}
OVERSAMPLE=${OVERSAMPLE:-$($PYTHON -m dvcl.synthetic_training foreground_oversample)}
OVERSAMPLE_MODE=$($PYTHON -m dvcl.synthetic_training oversample_mode)
KIND=${KIND:-abdomen}
PRESET=flare22; [ "$KIND" = cardiac ] && PRESET=mmwhs
# the real scan of the preset and how it is scored: tests/data/real_scans.json (tools/model_card.py reads it too;
# the chest CTA labels the whole heart, the aorta and the pulmonary artery: MM-WHS structures grouped)
scan() {  # one field of the preset's entry; a list prints one item per line
  $PYTHON -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]]; [print(x) for x in (v if isinstance(v, list) else [v])]' \
    "$ROOT/tests/data/real_scans.json" "$PRESET" "$1"
}
REAL_CT="$ROOT/tests/data/$(scan folder)/image.nii.gz"
REAL_LABEL="$ROOT/tests/data/$(scan folder)/$(scan label_file)"
SCORE=()  # --group specs when the reference is in another label set, else the preset's own labels
while IFS= read -r group; do SCORE+=(--group "$group"); done < <(scan groups)
[ ${#SCORE[@]} -gt 0 ] || SCORE=(--preset "$PRESET")
VARIANT=${ABLATE:+no_$ABLATE}; VARIANT=${VARIANT:-all}
if [ "$KIND" = cardiac ]; then VARIANT="heart_$VARIANT"; fi
OUT="$WORK/$VARIANT"
mkdir -p "$OUT"
echo "synthetic_model: $COUNT $KIND cases, variant $VARIANT, $METHOD $PROFILE x $ITERATIONS iterations -> $OUT" >&2
if [ ! -f "$OUT/synth/dataset.json" ]; then
  $DVCL --progress none synth "$OUT/synth" --count "$COUNT" --seed "$DATA_SEED" --workers "$WORKERS" --resume --kind "$KIND" \
    ${ABLATE:+--no-$ABLATE} ${SYNTH_ARGS:-}
fi
if [ ! -f "$OUT/cache/dataset.json" ]; then
  # shellcheck disable=SC2086  # SPACING is three numbers
  $DVCL --progress none prepare "$OUT/synth" -o "$OUT/cache" --preset "$PRESET" --spacing $SPACING --workers "$WORKERS"
fi
LIMIT=()
[ -n "${TRAIN_UNTIL:-}" ] && TRAIN_SECONDS=$((TRAIN_UNTIL - $(date +%s)))
[ -n "${TRAIN_SECONDS:-}" ] && LIMIT=(timeout --signal=TERM --kill-after=60 "$TRAIN_SECONDS")
if [ ! -f "$OUT/run/run.json" ] || ! grep -q '"status": "finished"' "$OUT/run/run.json"; then
  if [ -f "$OUT/run/checkpoints/last_state.pt" ]; then
    "${LIMIT[@]}" $DVCL --progress none train --resume "$OUT/run" --device "$DEVICE" || [ ${#LIMIT[@]} -gt 0 ]
  else
    # shellcheck disable=SC2086  # EXTRA holds several arguments
    "${LIMIT[@]}" $DVCL --progress none train --data "$OUT/cache" --out "$OUT/run" --method "$METHOD" \
      --labeled-fraction 1.0 --profile "$PROFILE" --iterations "$ITERATIONS" --device "$DEVICE" --seed "$SEED" \
      --set flip_prob="$FLIP_PROB" --set foreground_oversample="$OVERSAMPLE" --set oversample_mode="$OVERSAMPLE_MODE" \
      ${EXTRA:-} || [ ${#LIMIT[@]} -gt 0 ]
  fi
fi
if [ ! -f "$OUT/model/model.json" ]; then
  # best on the SYNTHETIC validation split; a run too short to have validated falls back to its last weights
  $DVCL --progress none export "$OUT/run" -o "$OUT/model"
fi
# nnU-Net's post-processing: the structures whose largest connected component alone is kept, chosen on the
# synthetic validation split (POSTPROCESS=0: none)
if [ "${POSTPROCESS:-1}" = 1 ] && ! grep -q '"postprocessing"' "$OUT/model/model.json"; then
  $DVCL --progress none postprocess "$OUT/model" --data "$OUT/cache" -o "$OUT/model" --device "$DEVICE"
fi
# the real CT: segmented and scored once per finished model
$DVCL --progress none segment "$REAL_CT" --model "$OUT/model" -o "$OUT/real_ct_pred.nii.gz" --device "$DEVICE" --overwrite
$DVCL --progress none evaluate "$OUT/real_ct_pred.nii.gz" "$REAL_LABEL" "${SCORE[@]}" --out "$OUT/real_ct" \
  --name "synthetic $VARIANT" --no-plots --overwrite
cat "$OUT/real_ct/report.md"
