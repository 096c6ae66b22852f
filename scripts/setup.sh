#!/usr/bin/env bash
# Installs everything gradmesh needs on a fresh Debian machine with Rust and Python 3:
#   - a project venv (.venv) with torch==2.11.0 (pairs with tch 0.24), scikit-learn, safetensors
#     (+ packaging, which safetensors.torch imports), and opacus (the reference the DP accountant's
#     test compares with) installed without dependency resolution so it never touches torch
#   - the 8x8 digits data set exported from the scikit-learn wheel into data/ (no downloads at run time)
#   - a text corpus for the char-level transformer, exported from CPython's pydoc_data into data/
# Idempotent: a stamp file records what was installed, so repeated runs cost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# .cargo/config.toml points LIBTORCH at .venv/lib/python3.11/site-packages/torch, so prefer 3.11.
if [ -z "${PYTHON_BIN:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON_BIN=python3.11; else PYTHON_BIN=python3; fi
fi
VENV=.venv
STAMP="$VENV/.gradmesh-setup-v3"
REQS="torch==2.11.0 scikit-learn==1.7.2 safetensors==0.6.2 numpy packaging"
# opacus 1.5.4 needs torch, numpy, scipy (pulled by scikit-learn) and opt-einsum; --no-deps keeps pip
# from re-resolving the pinned torch, so its one remaining pure-Python dependency is named here.
REQS_NODEPS="opacus==1.5.4 opt-einsum==3.4.0"

if [ ! -f "$STAMP" ]; then
  echo "setup: installing $REQS into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet $REQS
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet --no-deps $REQS_NODEPS
  touch "$STAMP"
fi

TORCH_DIR="$VENV/lib/python3.11/site-packages/torch"
if [ ! -f "$TORCH_DIR/version.py" ]; then
  echo "setup: warning: $TORCH_DIR not found (venv is not Python 3.11);" \
    "export LIBTORCH=\$PWD/$VENV/lib/pythonX.Y/site-packages/torch before cargo build" >&2
fi

mkdir -p data
if [ ! -f data/digits.safetensors ]; then
  echo "setup: exporting digits to data/"
  "$VENV/bin/python" scripts/export_digits.py data/digits.safetensors
fi
if [ ! -f data/corpus.txt ]; then
  echo "setup: exporting the text corpus to data/"
  "$VENV/bin/python" scripts/export_corpus.py data/corpus.txt
fi
