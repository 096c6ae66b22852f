#!/usr/bin/env bash
# Installs everything gradmesh needs on a fresh Debian machine with Rust and Python 3:
#   - a project venv (.venv) with torch==2.11.0 (pairs with tch 0.24), scikit-learn, safetensors
#   - the 8x8 digits data set exported from the scikit-learn wheel into data/ (no downloads at run time)
# Idempotent: a stamp file records what was installed, so repeated runs cost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_BIN="${PYTHON_BIN:-python3}"
VENV=.venv
STAMP="$VENV/.gradmesh-setup-v1"
REQS="torch==2.11.0 scikit-learn==1.7.2 safetensors==0.6.2 numpy"

if [ ! -f "$STAMP" ]; then
  echo "setup: creating $VENV with $REQS"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet $REQS
  touch "$STAMP"
fi

if [ ! -f data/digits.safetensors ]; then
  echo "setup: exporting digits to data/"
  mkdir -p data
  "$VENV/bin/python" scripts/export_digits.py data/digits.safetensors
fi
