#!/usr/bin/env bash
# The main job on the embedded default: phantom CTs -> semi-supervised DVCL training -> segmentation ->
# Dice/Jaccard table. Nothing is downloaded. Results land in ./demo_output (override with DVCL_DEMO_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/dvcl demo --out "${DVCL_DEMO_OUT:-demo_output}" "$@"
