#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with the backend and test tools.
# Torch is pinned to the CPU build that this platform provides locally; a GPU machine can install
# its CUDA build of torch first and this script keeps it (pip sees the requirement satisfied).
# The first run takes a few minutes (torch, MONAI, SimpleITK, the Slicer test tools); every step says what it
# does and pip shows its progress, so a long download is never silent. Later runs skip it (a stamp file
# records what was installed; a changed backend/pyproject.toml reinstalls).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.10 python3.9 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
VENV=${DVCL_VENV:-.venv}
stamp="$VENV/.dvcl-installed"
RECIPE=2  # bump when the install steps below change what gets installed
want="$( (cat backend/pyproject.toml; echo "recipe $RECIPE") | sha1sum | cut -c1-12)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# pip's own progress (download bars, "Installing collected packages") goes to the terminal; quieter when
# stderr is not a terminal (CI logs): one line per package instead of bars
PIP_FLAGS=(--progress-bar on)
[ -t 2 ] || PIP_FLAGS=(--progress-bar off)
start=$(date +%s)
step() { echo "[setup $1/4, $(( $(date +%s) - start )) s] $2" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  step 1 "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
else
  step 1 "reusing $VENV ($("$VENV/bin/python" --version)); backend/pyproject.toml changed since the last install"
fi
step 2 "upgrading pip"
"$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" --upgrade pip >&2
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  step 3 "installing torch ${DVCL_TORCH_VERSION:-2.13.0} (the largest download: a few minutes)"
  "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" "torch==${DVCL_TORCH_VERSION:-2.13.0}" >&2
else
  step 3 "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
fi
step 4 "installing the dvcl backend with its test tools (MONAI, SimpleITK, slicer-core, PySide6, pytest, ruff)"
"$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -e "backend[dev,slicer-tests]" >&2
echo "$want" > "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s: $VENV is ready" >&2
