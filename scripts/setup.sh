#!/usr/bin/env bash
# Installs everything gradmesh needs on a fresh Debian machine with Rust and Python 3:
#   - a project venv (.venv) with torch==2.11.0 (pairs with tch 0.24), scikit-learn, safetensors
#     (+ packaging, which safetensors.torch imports), and opacus (the reference the DP accountant's
#     test compares with) installed without dependency resolution so it never touches torch
#   - the 8x8 digits data set exported from the scikit-learn wheel into data/ (no downloads at run time)
#   - a text corpus for the char-level transformer, exported from CPython's pydoc_data into data/
#   - a >= 50 MB language-model corpus, data/pycorpus.txt: every UTF-8 *.py file of the venv's
#     site-packages (no downloads), sorted by path, joined with one newline between files
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
# The LM corpus: what CharCorpus::load would read from site-packages if only *.py files were there
# (same order: path components compared one by one; same "\n" between files; non-UTF-8 files are
# skipped), so the bytes depend only on what is installed in the venv. Written to a temp file and
# renamed, so an interrupted run never leaves a short corpus that looks finished.
PYCORPUS=data/pycorpus.txt
PYCORPUS_MIN_BYTES=50000000
if [ ! -f "$PYCORPUS" ] || [ "$(stat -c %s "$PYCORPUS")" -lt "$PYCORPUS_MIN_BYTES" ]; then
  echo "setup: building $PYCORPUS from the venv's Python sources"
  "$VENV/bin/python" - "$PYCORPUS" "$PYCORPUS_MIN_BYTES" <<'PY'
import os
import sys
import sysconfig
from pathlib import Path

out, min_bytes = Path(sys.argv[1]), int(sys.argv[2])
root = Path(sysconfig.get_paths()["purelib"])
files = []
for parent, dirs, names in os.walk(root):  # never follows symlinked directories
    files += [Path(parent, n) for n in names if n.endswith(".py") and Path(parent, n).is_file()
              and not Path(parent, n).is_symlink()]
files.sort(key=lambda p: p.relative_to(root).parts)
tmp = out.with_name(out.name + ".tmp")
size = skipped = used = 0
with open(tmp, "wb") as f:
    for path in files:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if used:
            f.write(b"\n")
            size += 1
        f.write(data)
        size += len(data)
        used += 1
if size < min_bytes:
    tmp.unlink()
    sys.exit(f"setup: only {size} bytes of Python sources under {root}; need {min_bytes}")
os.replace(tmp, out)
print(f"pycorpus: {size} bytes from {used} .py files under {root} ({skipped} not UTF-8) -> {out}")
PY
fi
