#!/usr/bin/env bash
# The real-GPU check: the whole suite (PCIe, NVLink and NCCL included; with one GPU the two
# that need a pair run apart, incomplete as they should be), the fault injections, the overhead
# benchmark, the memory bench and gpu-burnin's own tests that touch a device, in one script that fits
# a lent GPU machine's lease (under 6 minutes on one H100/H200). `bench/gpu_probe.py`, the survey of
# the card that guided the tests built since, runs by hand.
#
#   bench/gpu_check.sh [OUT_DIR]          # default: $OUT (the device tool's output folder)
#   GPU_CHECK_DEVICE=cpu bench/gpu_check.sh /tmp/check   # a dry run on a machine without a GPU
#
# Nothing is installed: it runs from the checkout with the machine's python3, which must
# have torch, pytest, numpy and pandas (nvidia-ml-py for serials and the driver version).
# It leaves two files in OUT_DIR, summary.txt and gpu_check.tgz (every step's log, the
# result files), since the device tool brings back at most 8 files.
# Commit both, unpacked, under bench/results/<date>-<card>/ with the command that ran it.
set -u -o pipefail
out=${1:-${OUT:?give an output directory or set OUT}}
device=${GPU_CHECK_DEVICE:-cuda}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 4
mkdir -p "$out"
work=$(mktemp -d)
mkdir -p "$work/results"
trap 'cp "$work/summary.txt" "$out/" 2>/dev/null; tar czf "$out/gpu_check.tgz" -C "$work" . ; rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if [ "$device" = cpu ]; then
  duration=2; bench=(--device cpu --rounds 4); membench=(--device cpu --rounds 2 --seconds 0.5)
else
  duration=20; bench=(--device cuda --rounds 2 --seconds 3); membench=(--device cuda --rounds 3 --seconds 2)
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: bench/gpu_check.sh (GPU_CHECK_DEVICE=$device)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  "$py" - <<'PY'
import platform, torch
print("python:", platform.python_version(), "torch:", torch.__version__, "cuda:", torch.version.cuda)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu {i}: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, cc {p.major}.{p.minor}")
PY
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,pstate,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm,clocks_event_reasons.active --format=csv
} >"$work/summary.txt" 2>&1
cat "$work/summary.txt"

status=0
step() {  # step NAME EXPECTED-EXIT COMMAND...: run, log, and compare the exit code with what it should be
  local name=$1 expected=$2; shift 2
  local began=$SECONDS
  "$@" >"$work/$name.log" 2>&1
  local code=$?
  local verdict=ok; [ "$code" = "$expected" ] || { verdict=UNEXPECTED; status=1; }
  printf '%-10s exit %s (expected %s) in %3ss: %s\n' "$name" "$code" "$expected" $((SECONDS - began)) "$verdict" | tee -a "$work/summary.txt"
  tail -n 25 "$work/$name.log"
}

gpus=2
if [ "$device" = cuda ]; then gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())'); fi
# 1. The whole suite on every GPU (matmul, memory, PCIe, NVLink, NCCL, health); a pass needs the packaged
#    baseline for this card.
if [ "$gpus" -ge 2 ]; then
  step suite 0 "$py" -m harness.cli run --device "$device" --profile quick --duration "$duration" --results "$work/results"
  # A rank that hangs among the all-reduces must end the run as HANG, within its limit.
  step ncclhang 1 "$py" -m harness.cli run --device "$device" -m nccl --inject nccl.hang@2:1 --hang-timeout 20 --results "$work/results"
else
  step suite 0 "$py" -m harness.cli run --device "$device" --profile quick --duration "$duration" -m "not nvlink and not nccl" --results "$work/results"
  # One GPU: NVLink has no pair and the all-reduce one rank (its path runs: NCCL's join, the checks, the
  # timing): nothing to test, incomplete where the card's baseline requires their figures (docs/interconnect.md).
  step single 2 "$py" -m harness.cli run --device "$device" -m "nvlink or nccl" --results "$work/results"
fi
# 2. One flipped bit in one product on GPU 0 must fail the run with DATA_MISMATCH.
step corrupt 1 "$py" -m harness.cli run --device "$device" -m matmul --duration 5 --inject corrupt --results "$work/results"
# 3. A kernel that never ends on GPU 0 must end the run, within its limit, as a failure (HANG)...
step hang 1 "$py" -m harness.cli run --device "$device" -m matmul --duration 5 --inject hang --hang-timeout 10 --results "$work/results"
# ...and leave the GPU usable once its worker is gone.
if [ "$device" = cuda ]; then step usable 0 "$py" bench/gpu_usable.py; fi
# 4. The test's TFLOP/s against a bare torch.matmul loop, side by side.
step bench 0 "$py" bench/matmul_overhead.py "${bench[@]}"
# 5. The memory test's verify bandwidth against a plain device copy, and its coverage.
step membench 0 "$py" bench/memory_bandwidth.py "${membench[@]}"
# 6. gpu-burnin's own tests that touch a device, on a machine with a driver (the GPU-side tests run
#    here only; the slow ones run the CPU suite end to end, which CI does). The fleet report's,
#    the watch's and the Kubernetes tests have no GPU path: CI runs them, this script does not
#    (the GPU machine's python may lack their packages too).
no_gpu_path=(--ignore-glob='tests/test_report*.py' --ignore-glob='tests/test_kube_*.py' --ignore-glob='tests/test_watch*.py'
  --ignore=tests/test_entrypoints.py --ignore=tests/test_deploy.py --ignore=tests/test_image.py)
step tests 0 timeout -k 10 150 "$py" -m pytest tests -q -p no:cacheprovider -m "not slow" "${no_gpu_path[@]}"

echo "results: $(ls "$work/results" | wc -l) result files" | tee -a "$work/summary.txt"
exit $status
