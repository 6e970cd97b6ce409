#!/usr/bin/env bash
# ruff, then the test suite (backend, Slicer module logic against real MRML, the .ui).
#
#   bash scripts/test.sh                                  # everything
#   bash scripts/test.sh tests/test_segment.py            # a selection: only that file (ruff still runs)
#   bash scripts/test.sh -q tests/test_evaluate.py::test_quiet_shows_no_progress -x
#   bash scripts/test.sh -q -p no:cacheprovider --durations=15   # options only: the whole suite (CI)
#
# Arguments are passed to pytest. When one of them names a test path (an existing file or folder, optionally
# with ::test), only the selection runs; otherwise the whole tests/ folder does. Tests run with one torch thread
# (OMP_NUM_THREADS=1, unless you set it): many small tensors, and CI has 2 cores.
# DVCL_TEST_DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo "[test] $*" >&2; if [ "${DVCL_TEST_DRY_RUN:-0}" = 1 ]; then return 0; fi; "$@"; }
[ "${DVCL_TEST_DRY_RUN:-0}" = 1 ] || bash scripts/setup_env.sh
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
selection=0
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) if [ -e "${arg%%::*}" ]; then selection=1; fi ;;
  esac
done
run .venv/bin/ruff check backend DVCLSegmentation tests benchmarks tools
if [ "$selection" = 1 ]; then
  run .venv/bin/python -m pytest "$@"
else
  run .venv/bin/python -m pytest tests "$@"
fi
