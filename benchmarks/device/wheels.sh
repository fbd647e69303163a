#!/usr/bin/env bash
# Run on a machine with pip access, in the repo root, before a GPU check on a machine without
# one: downloads into .whl/ (git-ignored) the wheels, for Python 3.12 on x86-64 Linux, of what the
# checks need beyond a CUDA image with PyTorch: pyproject.toml's dependencies and their own, less
# the study's services and report libraries the checks never import (benchmarks/device/deps.py
# derives the list; versions as installed in .venv). check.sh installs them from there.
# WITH_TRITON=1 adds Triton (about 150 MB) for an image whose torch came without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
reqs=$("$py" benchmarks/device/deps.py)
if [ "${WITH_TRITON:-0}" = 1 ]; then
  reqs="$reqs triton==$("$py" -c "import importlib.metadata as m; print(m.version('triton'))")"
fi
for req in $reqs; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$req" 2>&1 | grep -v "^WARNING: Location" || true
done
ls -l .whl
du -sh .whl
