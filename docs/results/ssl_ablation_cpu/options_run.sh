#!/usr/bin/env bash
# issue 12's open options at the CPU benchmark, seed 0, two chains on the two cores (resumable)
cd /work/runopt  # a clone of the repository at the commit measured (edits elsewhere do not reach the runs)
export PATH=/tmp/smkbin:$PATH PYTHONPATH=/work/runopt/backend OMP_NUM_THREADS=1
chain() { for item in "$@"; do
  SEEDS=0 METHODS=dvcl JOBS=1 bash benchmarks/ssl_benchmark.sh cpu /work/kk --set "${item#*|}" --out /work/opt/abl/${item%%|*}
done; }
chain "prob_space|dvcl:neighbour_space=probabilities" "lit_lambda_c|dvcl:lambda_c_rampup_fraction=0" > /work/opt/chainA.log 2>&1 &
chain "split_image|dvcl:split_scope=image" "no_decay|dvcl:outsider_decay=0" > /work/opt/chainB.log 2>&1 &
wait
