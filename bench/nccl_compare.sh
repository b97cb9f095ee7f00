#!/usr/bin/env bash
# Our all-reduce beside nccl-tests' all_reduce_perf, at the same sizes, on one node's GPUs.
#
#   bench/nccl_compare.sh [OUT_DIR]       # ALL_REDUCE_PERF=/path/to/all_reduce_perf if not on PATH
#
# Needs a node with at least two GPUs (an 8-GPU HGX board is what the baselines assume) and
# nccl-tests built against the same NCCL as torch (github.com/NVIDIA/nccl-tests, `make`).
# Runs all_reduce_perf from 8 MiB to 8 GiB (-f 2, 20 iterations, 5 warm-up, checked, -a 3: the
# slowest rank's time, as ours), then our nccl test (8 MiB to 8 GiB by eights, 20 all-reduces
# per window), and prints both busbw figures and their ratio per size. Exit 0 when ours is at
# least 0.97 of nccl-tests' at 8 GiB.
# Logs and the result file stay in OUT_DIR (default $OUT, else /tmp/nccl-compare).
set -u -o pipefail
out=${1:-${OUT:-/tmp/nccl-compare}}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 4
py=${PYTHON:-python3}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
perf=${ALL_REDUCE_PERF:-$(command -v all_reduce_perf || true)}
if [ -z "$perf" ] || [ ! -x "$perf" ]; then
  echo "nccl_compare: all_reduce_perf not found: build github.com/NVIDIA/nccl-tests and set ALL_REDUCE_PERF" >&2
  exit 4
fi
gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())') || exit 4
if [ "$gpus" -lt 2 ]; then
  echo "nccl_compare: an all-reduce needs at least 2 GPUs; this machine has $gpus" >&2
  exit 4
fi
mkdir -p "$out/results"
echo "== nccl-tests all_reduce_perf on $gpus GPUs"
"$perf" -b 8M -e 8G -f 2 -g "$gpus" -n 20 -w 5 -c 1 -a 3 | tee "$out/all_reduce_perf.log" || exit 2
echo "== gpu-burnin nccl on $gpus GPUs"
"$py" -m harness.cli run --device cuda -m nccl --results "$out/results" | tee "$out/gpu-burnin.log"
result=$(ls -t "$out"/results/*.json | head -n 1)
echo "== side by side"
"$py" bench/nccl_tests.py compare "$out/all_reduce_perf.log" "$result" | tee "$out/compare.txt"
