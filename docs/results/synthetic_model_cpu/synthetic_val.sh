#!/usr/bin/env bash
# Synthetic validation of a model package: segment the 19 validation cases of the 96-case synthetic set (splits.json
# 'val'; never trained on) with `dvcl segment`, score with `dvcl evaluate`; prints the mean Dice over structures and
# cases. Usage: synval.sh MODEL OUT
set -e
MODEL=$1; OUT=$2
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/main/backend OMP_NUM_THREADS=1
S=/work/syn13/q96p/all
mkdir -p "$OUT/in" "$OUT/ref"
for c in $(python3 -c "import json; print(' '.join(json.load(open('$S/cache/splits.json'))['val']))"); do
  ln -sfn "$S/synth/labeled/images/$c.nii.gz" "$OUT/in/$c.nii.gz"
  ln -sfn "$S/synth/labeled/labels/$c.nii.gz" "$OUT/ref/$c.nii.gz"
done
python3 -m dvcl --progress none segment "$OUT/in" -o "$OUT/pred" --model "$MODEL" --device cpu --overwrite >/dev/null 2>&1
python3 -m dvcl --progress none evaluate "$OUT/pred" "$OUT/ref" --preset flare22 --out "$OUT/eval" --no-plots --overwrite >/dev/null 2>&1
python3 -c "import json; s=json.load(open('$OUT/eval/summary.json')); print('$MODEL', round(s['mean_dice_pct'], 2), '+-', round(s['mean_dice_pct_sd'] or 0, 2))"
