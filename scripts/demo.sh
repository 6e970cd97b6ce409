#!/usr/bin/env bash
# The main job on the embedded default: phantom CTs -> semi-supervised DVCL training -> segmentation ->
# Dice/Jaccard table. Nothing is downloaded. Results land in ./demo_output (override with DVCL_DEMO_OUT).
# Its first line says what it runs and how long that takes; the thread count is chosen by dvcl itself
# (dvcl.utils.threads), so nothing is set here. Extra arguments go to `dvcl demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/dvcl ]; then
  echo "[demo] first run: setting up .venv (a few minutes, once), then the demo itself" >&2
fi
bash scripts/setup_env.sh
exec .venv/bin/dvcl demo --out "${DVCL_DEMO_OUT:-demo_output}" "$@"
