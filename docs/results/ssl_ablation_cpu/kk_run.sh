#!/usr/bin/env bash
# K/K' (supplementary Table 5) at the CPU benchmark, seed 0, two chains on the two cores. Resumable.
cd /work/runkk
export PATH=/tmp/smkbin:$PATH PYTHONPATH=/work/runkk/backend OMP_NUM_THREADS=1
chain() { for kk in "$@"; do
  SEEDS=0 METHODS=dvcl JOBS=1 bash benchmarks/ssl_benchmark.sh cpu /work/kk --set dvcl:k=${kk%:*} --set dvcl:k_out=${kk#*:} --out /work/kk/abl/k${kk/:/_}
done; }
[ -f /work/kk/cache/dataset.json ] || SEEDS=0 METHODS=dvcl JOBS=1 ITERATIONS=1 bash benchmarks/ssl_benchmark.sh cpu /work/kk --out /work/kk/prep_only > /dev/null 2>&1
chain 5:5 10:10 > /work/kk/chainA.log 2>&1 &
chain 5:10 15:15 > /work/kk/chainB.log 2>&1 &
wait
