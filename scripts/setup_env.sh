#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with the backend and test tools.
# Torch is pinned to the CPU build that this platform provides locally; a GPU machine can install
# its CUDA build of torch first and this script keeps it (pip sees the requirement satisfied).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.10 python3.9 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
VENV=${DVCL_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.dvcl-installed"
want="$(cat backend/pyproject.toml scripts/setup_env.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch and the dvcl backend into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q "torch==${DVCL_TORCH_VERSION:-2.13.0}"
  fi
  "$VENV/bin/python" -m pip install -q -e "backend[dev,slicer-tests]"
  echo "$want" > "$stamp"
fi
