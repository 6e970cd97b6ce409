#!/usr/bin/env bash
# the real CT, read once per model (docs/results/synthetic_organ_sizes_cpu/protocol.md, stage 2): seed $1
set -eu
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=/work/runwide/backend OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
s=$1; OUT=/work/syna/size/wide/s$s; R=/work/runwide/tests/data/abdomen_ct_3mm
cd /work/runwide
python -m dvcl --progress none segment $R/image.nii.gz --model $OUT/model -o $OUT/real_ct_pred.nii.gz --device cpu --overwrite
python -m dvcl --progress none evaluate $OUT/real_ct_pred.nii.gz $R/$(python -c 'import json;print(json.load(open("tests/data/real_scans.json"))["flare22"]["label_file"])') --preset flare22 --out $OUT/real_ct --name "adult sizes, wide seed $s" --no-plots --overwrite
cat $OUT/real_ct/report.md
