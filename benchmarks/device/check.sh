#!/usr/bin/env bash
# The GPU checks of issue 10 as ONE device call (device `run`, carry [".whl"], timeout_s 560):
#   bash benchmarks/device/check.sh
# Prepare first, here: bash benchmarks/device/wheels.sh. Each step has its own time limit, so
# that a slow one leaves the rest their turn and the whole stays inside one call; every output
# lands in $OUT (device tool) or ./device-out (NAME.txt: the result, NAME.log: progress and
# errors), and the summary is printed last.
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
# 1. correctness: the gpu-marked tests (CUDA pack = CPU pack; train_pack on CUDA = single CPU runs)
step gpu-tests 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_fast.py tests/test_pack.py
# 2. JSB Chorales, paper protocol, full corpus: 4 trials one at a time (the baseline: batch-1
#    steps are launch-bound on a GPU) against packs of 64 and 256 of a 256-trial sample
step bench-jsb 240 python3 -m odyssey bench study --protocol paper --tasks jsb_chorales --device cuda \
  --packs 1,64,256 --trials 256 --single-trials 4 --epochs 1 --no-mix
# 3. the stand-ins (bidirectional) on 64 training sequences (splits in proportion; the grid is
#    projected over the full corpus), so that their preparation and an epoch fit the call
step bench-standins 150 python3 -m odyssey bench study --protocol paper --tasks timit,iam_online \
  --device cuda --packs 1,256 --trials 256 --single-trials 4 --size 64 --epochs 1 --no-mix
cat "$out/gpu.txt" "$out/summary.txt"
tail -n 25 "$out"/bench-*.txt 2>/dev/null
