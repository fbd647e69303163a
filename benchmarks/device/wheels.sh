#!/usr/bin/env bash
# Run HERE (a machine with pip access), in the repo root, before a device check: downloads the
# wheels of our dependencies that the GPU machine's image lacks (it has torch, numpy, pandas,
# pyarrow, scipy, pyyaml, jinja2, filelock, pytest, pytest-timeout; no pydantic, no rapidfuzz)
# for its Python 3.12 into .whl/ (git-ignored). The device check installs them from there.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
for name in pydantic pydantic_core annotated-types typing-inspection rapidfuzz; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$(version "$name")" 2>&1 | grep -v "^WARNING: Location" || true
done
ls -l .whl
du -sh .whl
