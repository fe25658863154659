#!/usr/bin/env bash
# Set up edgecnn with every optional stack in ./.venv (Python 3.11, CPU PyTorch 2.13.0).
# Usage: bash install.sh            (idempotent; about 2 minutes and 4.5 GB on a fresh machine)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# constraints.txt pins torch to the CPU build and the converter versions that install together.
.venv/bin/python -m pip install -q -c constraints.txt -e '.[all]'
.venv/bin/python -m pip check
echo "edgecnn installed in $(pwd)/.venv; try: .venv/bin/edgecnn models"
