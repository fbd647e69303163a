#!/usr/bin/env bash
# The GPU checks in one run of at most 10 minutes, on a machine with a CUDA device and PyTorch:
#   bash benchmarks/device/check.sh
# Offline machines: run benchmarks/device/wheels.sh first on one with pip access; the wheels it
# puts in .whl/ are installed from there. Each step has its own time limit, so that a slow one
# leaves the rest their turn; every output lands in $OUT (or ./device-out): NAME.txt the result,
# NAME.log progress and errors, summary.txt one line per step, printed last.
set -uo pipefail
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 ODYSSEY_DATA_DIR=/tmp/odyssey-data
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $out/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>"$out/$name.log"
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >"$out/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >>"$out/gpu.txt"
python3 -c "import triton; print('triton', triton.__version__)" >>"$out/gpu.txt" 2>&1
# what pyproject.toml asks for that is still missing (the steps needing it will fail)
missing=$(python3 benchmarks/device/deps.py --missing 2>&1)
echo "missing: ${missing:-nothing}" | tr '\n' ' ' | tee -a "$out/summary.txt"
echo
# 1. correctness: the gpu-marked tests (the Triton kernels on CUDA against the reference loop,
#    a CUDA pack equals the CPU pack, train_pack on CUDA equals single CPU runs, a CUDA training
#    step never waits for the GPU)
step gpu-tests 200 python3 -m pytest -m gpu -q -p no:cacheprovider \
  tests/test_triton.py tests/test_fast.py tests/test_pack.py tests/test_engine_reads.py
# 2. JSB Chorales, paper protocol, full corpus: 4 trials one at a time (a short baseline:
#    batch-1 steps are launch-bound on a GPU) against packs of 64, 256 and 1024 of a 1024-trial
#    sample (cut into width buckets as the study engine cuts them on CUDA)
step bench-jsb 220 python3 -m odyssey bench study --protocol paper --tasks jsb_chorales \
  --device cuda --packs 1,64,256,1024 --trials 1024 --single-trials 4 --epochs 1 --no-mix
# 3. the stand-ins (bidirectional) on 64 training sequences (splits in proportion; the grid is
#    projected over the full corpus), so that their preparation and an epoch fit
step bench-standins 140 python3 -m odyssey bench study --protocol paper --tasks timit,iam_online \
  --device cuda --packs 1,256 --trials 256 --single-trials 4 --size 64 --epochs 1 --no-mix
cat "$out/gpu.txt" "$out/summary.txt"
tail -n 25 "$out"/bench-*.txt 2>/dev/null
