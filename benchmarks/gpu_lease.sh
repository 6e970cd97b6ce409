#!/usr/bin/env bash
# Everything a short GPU lease should measure, in one call (issues 12 and 17), sized to BUDGET seconds.
#
#   OUT=/tmp/gpu BUDGET=560 bash benchmarks/gpu_lease.sh
#
# 1. Co-training step, DVCL vs CPS, interleaved (bench_cotrain_step.py): quick and paper profile on CUDA.
# 2. Segmentation of a 512 x 512 x 300 CT on the GPU (bench_segment_speed.py --cases big, one round).
# 3. Until the budget runs out, at the same time on the one GPU:
#    - the benchmark's GPU variant at the budget sized on validation (ssl_benchmark.md: 1000 iterations), every
#      method of the catalog, 3 seeds; the CPU table's four methods first (METHODS to change the list);
#    - the paper profile (patch 64x128x128, U-Net 16..256, SGD lr 0.1, batch 4+4) for labeled-only, CPS, DVCL
#      and fully supervised, seeds PAPER_SEEDS [0], PAPER_ITERATIONS [1000] iterations, on the same phantoms
#      prepared at 1 mm, as far as the time allows (validation Dice every VAL_EVERY iterations in each run's
#      metrics.csv). One seed's four runs take about 260 s at 500 iterations on an H200
#      (docs/results/ssl_benchmark_paper_gpu/): size PAPER_ITERATIONS so the runs finish, since a stopped run has
#      no test read.
# 4. PARTS=...,synth (issue 13): synthetic abdominal CT generated on the device, a model trained on it
#    (benchmarks/synthetic_model.sh, SYN_* below), scored once on the real abdomen CT of tests/data; the model
#    package comes back as OUT/synth_model.tgz, its report as OUT/synth_report.md.
#    PARTS=...,synth_heart: the same for the heart (KIND=cardiac: MM-WHS labels, scored on the chest CTA of tests/data
#    as whole heart / aorta / pulmonary artery), next to it on the same GPU; OUT/synth_model_heart_all.tgz.
#    PARTS=...,synth_ablation (issue 13's randomisation study, a few switches per lease): for each of SYNA_VARIANTS
#    (`all` and names of `dvcl synth --no-NAME` switches) SYNA_COUNT synthetic cases generated on the device with that
#    one randomisation off, a model trained SYNA_ITERATIONS (the same for every variant, `all` the reference), all
#    variants side by side on the GPU, each scored once on the real abdomen CT; OUT/synth_ablation.md is the table
#    (benchmarks/synthetic_table.py), OUT/synth_ablation.tgz the reports, configs and curves. A short schedule: the
#    variants compare with each other, not with the shipped model. SYNA_SEED [0]: the data and training seed (a
#    second lease with SYNA_SEED=1 gives each variant its replicate; WORK/syna_s<SEED> keeps seeds apart).
# 5. PARTS=...,ablation (issue 12): DVCL with one term or option changed (ABLATIONS below), 3 seeds each, one setting
#    after the other next to the grid, in WORK/abl/<name>; `dvcl compare` tables them against the grid's rows
#    (docs/results/ssl_benchmark.md, "Ablations").
# Run folders come back as OUT/runs.tgz without checkpoints; `dvcl experiment` with the same arguments on
# that folder rewrites the tables from the finished runs (finished runs are skipped).
# MPS [1]: start the CUDA MPS daemon for the parallel runs (checked; without it where it fails).
# PARTS [paper] chooses the parts (comma-separated; also synth, synth_heart, synth_ablation, ablation); the parts in the background share the GPU.
#
# The device machine is bare: monai and SimpleITK travel as wheels in .whl/ (see the device README). The wheels
# (55 MB) and the tracked tree (20 MB) exceed the 64 MiB a call carries: for the call, leave docs/, tests/data/ and
# the shipped weights (backend/dvcl/models/*/weights.safetensors) out of the copy (git rm --cached and the same
# paths in .git/info/exclude; git reset HEAD -- those paths after), 2.3 MB remain. synth and synth_heart need
# tests/data (keep abdomen_ct_3mm or chest_cta_1p5mm and real_scans.json); synth_ablation too.
set -uo pipefail
START=$(date +%s)
BUDGET=${BUDGET:-560}
OUT=${OUT:?set OUT}
W=${WORK:-/tmp/b12}
ITERATIONS_GRID=${ITERATIONS_GRID:-1000}
PAPER_ITERATIONS=${PAPER_ITERATIONS:-1000}  # the paper's 10000 take about 75 GPU minutes for the four methods
VAL_EVERY=${VAL_EVERY:-250}
PAPER_WORKERS=${PAPER_WORKERS:-3}  # loader workers per paper-profile run (4 runs x 3 + 4 on a 16-core machine)
PARTS=${PARTS:-paper}  # step, segment (2026-11-26), grid and paper at 500 iterations (2026-11-27) are measured
SYNA_SEED=${SYNA_SEED:-0}; SYNA_W=$W/syna_s$SYNA_SEED  # synth_ablation: seed and work folder
want() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -d .whl ]; then  # a second call on the warm machine has them already: not installed again
  { [ -d /tmp/site/monai ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl; } && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/backend${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DVCL="python3 -m dvcl"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# MPS (MPS=1, the default): the many small runs of a grid run their kernels side by side instead of time-slicing
# the GPU (docs/results/README.md: 48 runs of 300 iterations in 331 s on an H100). Checked with one CUDA call;
# where the daemon does not work (a sandboxed driver), it is stopped and the runs share the GPU without it.
mps=0
if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c 'import torch; print(torch.ones(1, device="cuda").sum().item())'; then
    mps=1; echo "MPS daemon on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; echo "MPS did not work: the runs time-slice the GPU"
  fi
fi
python3 -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)'

# issue 13 first (it needs the most time): generate, prepare, train, export, score; in the background
p4=""
if want synth; then
  echo "== synthetic model, in the background ($(left) s left)"
  COUNT=${SYN_COUNT:-96} SPACING=${SYN_SPACING:-2.5 2.5 5.0} PROFILE=${SYN_PROFILE:-quick} \
    ITERATIONS=${SYN_ITERATIONS:-15000} METHOD=fully DEVICE=cuda WORKERS=${SYN_WORKERS:-8} DVCL="$DVCL" \
    EXTRA="--set val_every=${SYN_VAL_EVERY:-1000} --set num_workers=4" TRAIN_UNTIL=$((START + BUDGET - ${SYN_RESERVE:-150})) \
    setsid timeout $(($(left) - 30)) bash benchmarks/synthetic_model.sh "$W/syn" > "$OUT/synth.log" 2>&1 & p4=$!
fi
p6=""
if want synth_heart; then
  echo "== synthetic heart model, in the background ($(left) s left)"
  KIND=cardiac OVERSAMPLE=0 COUNT=${SYNH_COUNT:-64} SPACING=${SYNH_SPACING:-2.5 2.5 2.5} PROFILE=quick \
    ITERATIONS=${SYNH_ITERATIONS:-10000} METHOD=fully DEVICE=cuda WORKERS=${SYN_WORKERS:-8} DVCL="$DVCL" \
    EXTRA="--set val_every=1000 --set num_workers=2" TRAIN_UNTIL=$((START + BUDGET - ${SYN_RESERVE:-150})) \
    setsid timeout $(($(left) - 30)) bash benchmarks/synthetic_model.sh "$W/syn" > "$OUT/synth_heart.log" 2>&1 & p6=$!
fi
p7=""
if want synth_ablation; then
  echo "== synthetic randomisation ablation, in the background ($(left) s left)"
  (for v in ${SYNA_VARIANTS:-all texture absence resolution}; do
     [ "$v" = all ] && a="" || a=$v
     ABLATE=$a SEED=$SYNA_SEED COUNT=${SYNA_COUNT:-48} SPACING="2.5 2.5 5.0" PROFILE=quick ITERATIONS=${SYNA_ITERATIONS:-5000} \
       METHOD=fully DEVICE=${SYNA_DEVICE:-cuda} WORKERS=${SYNA_WORKERS:-3} DVCL="$DVCL" \
       EXTRA="--set val_every=${SYNA_VAL_EVERY:-500} --set num_workers=2" \
       TRAIN_UNTIL=$((START + BUDGET - ${SYN_RESERVE:-150})) \
       timeout $(($(left) - 30)) bash benchmarks/synthetic_model.sh "$SYNA_W" > "$OUT/synth_ablation_$v.log" 2>&1 &
   done; wait) & p7=$!
fi
if want grid || want paper || want ablation; then
echo "== data ($(left) s left)"
if [ -f "$W/cache/dataset.json" ] && [ -f "$W/cache1mm/dataset.json" ]; then
  echo "data already prepared (a second call on the warm machine: the grid resumes its runs)"
else
$DVCL --progress none phantom "$W/phantoms" --kind cardiac --labeled 20 --unlabeled 0 --seed 0 --raw-values
# `wait` with no PIDs would also wait for the `tee` of the process substitution above, which never ends
$DVCL --progress none prepare "$W/phantoms" -o "$W/cache" --spacing 2.0 2.0 2.0 --workers 8 & p1=$!
$DVCL --progress none prepare "$W/phantoms" -o "$W/cache1mm" --spacing 1.0 1.0 1.0 --workers 8 & p2=$!
wait "$p1" "$p2"
fi
fi

if want step; then
echo "== co-training step ($(left) s left)"
timeout 80 python3 benchmarks/bench_cotrain_step.py --device cuda --threads 0 --repeats 15 > "$OUT/step_quick.json"
timeout 100 python3 benchmarks/bench_cotrain_step.py --device cuda --threads 0 --profile paper --repeats 15 \
  > "$OUT/step_paper.json"
cat "$OUT"/step_*.json
fi

if want segment; then
echo "== segment 512x512x300 on the GPU ($(left) s left)"
timeout 90 python3 benchmarks/bench_segment_speed.py --cases big --rounds 1 --json "$OUT/segment_gpu.json"
fi

echo "== grids ($(left) s left)"
STOP_AT=$(($(left) - 25))
CATALOG=$(python3 -c 'from dvcl.methods.catalog import method_names
core = ["supervised", "cps", "dvcl", "fully"]
print(",".join(core + [m for m in method_names() if m not in core]))')
p1=""; p3=""; p5=""
if want ablation; then
  # name|--set options: the term ablation, the supplementary's Table 5 (K / K'), issue 12's options
  ABLATIONS=${ABLATIONS:-"hqcl_only|dvcl:beta=0 dvcl_only|dvcl:hqcl_weight=0 no_qds|dvcl:qds=false
    nrc_nps|dvcl:nps_oneway=0.1 k5_5|dvcl:k=5,dvcl:k_out=5 k5_10|dvcl:k=5,dvcl:k_out=10 k10_10|dvcl:k=10,dvcl:k_out=10
    k15_15|dvcl:k=15,dvcl:k_out=15 prob_space|dvcl:neighbour_space=probabilities split_image|dvcl:split_scope=image"}
  (for item in $ABLATIONS; do
     [ "$(left)" -gt 90 ] || break  # what is left goes to the packing; orphans are killed after the wait below
     sets=(); IFS=, read -ra kv <<< "${item#*|}"; for o in "${kv[@]}"; do sets+=(--set "$o"); done
     DVCL="$DVCL" ITERATIONS=$ITERATIONS_GRID JOBS=3 WORKERS=1 METHODS=dvcl timeout $(($(left) - 25)) \
       bash benchmarks/ssl_benchmark.sh gpu "$W" "${sets[@]}" --out "$W/abl/${item%%|*}"
   done) > "$OUT/ablation.log" 2>&1 &
  p5=$!
fi
if want grid; then
DVCL="$DVCL" ITERATIONS=$ITERATIONS_GRID JOBS=${JOBS:-16} WORKERS=1 METHODS=${METHODS:-$CATALOG} \
  setsid timeout "$STOP_AT" bash benchmarks/ssl_benchmark.sh gpu "$W" > "$OUT/grid.log" 2>&1 & p1=$!
fi
if want paper; then
setsid timeout "$STOP_AT" $DVCL --progress none experiment --data "$W/cache1mm" \
  --methods supervised,cps,dvcl,fully --seeds "${PAPER_SEEDS:-0}" --profile paper --iterations "$PAPER_ITERATIONS" \
  --set batch_labeled=4 --set batch_unlabeled=4 --set lr=0.1 --set val_every="$VAL_EVERY" --set num_workers="$PAPER_WORKERS" \
  --device cuda --jobs 4 --keep-going --tuned-on none --out "$W/paper" > "$OUT/paper.log" 2>&1 & p3=$!
fi
# shellcheck disable=SC2086  # the PIDs of the parts that run
[ -n "$p1$p3$p4$p5$p6$p7" ] && wait $p1 $p3 $p4 $p5 $p6 $p7
# only this script's runs (every one names WORK in its arguments), not other dvcl processes of the machine
pkill -f -- "$W/" 2>/dev/null
sleep 2
echo "== pack ($(left) s left)"
tar czf "$OUT/runs.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.nii.gz' --exclude='*.nrrd' \
  -C "$W" "grid_gpu_i$ITERATIONS_GRID" paper abl 2>/dev/null
if want synth_ablation && [ -d "$SYNA_W" ]; then
  python3 benchmarks/synthetic_table.py "$SYNA_W" -o "$OUT/synth_ablation.md" || true
  (cd "$SYNA_W" && tar czf "$OUT/synth_ablation.tgz" --ignore-failed-read ./*/real_ct/report.md ./*/real_ct/summary.json \
     ./*/run/metrics.csv ./*/run/run.json ./*/run/config.yaml ./*/model/model.json 2>/dev/null)
fi
if want synth || want synth_heart; then
  for v in "$W"/syn/*/; do
    [ -f "$v/model/model.json" ] && tar czf "$OUT/synth_model_$(basename "$v").tgz" -C "$v" model run/metrics.csv run/config.yaml
    [ -f "$v/real_ct/report.md" ] && cp "$v/real_ct/report.md" "$OUT/synth_report_$(basename "$v").md"
  done
fi
[ "$mps" = 1 ] && { echo quit | nvidia-cuda-mps-control; }
ls -la "$OUT"
