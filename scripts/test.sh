#!/usr/bin/env bash
# The whole test suite (backend, Slicer module logic against real MRML, the .ui), plus ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/ruff check backend DVCLSegmentation tests benchmarks tools
exec .venv/bin/python -m pytest tests "$@"
