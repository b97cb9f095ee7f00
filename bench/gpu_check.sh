#!/usr/bin/env bash
# The real-GPU check: the whole suite, the fault injections and the overhead benchmark,
# in one script that fits a lent GPU machine's lease (about 4 minutes on one H100/H200).
#
#   bench/gpu_check.sh [OUT_DIR]          # default: $OUT (the device tool's output folder)
#   GPU_CHECK_DEVICE=cpu bench/gpu_check.sh /tmp/check   # a dry run on a machine without a GPU
#
# Nothing is installed: it runs from the checkout with the machine's python3, which must
# have torch, pytest, numpy and pandas (nvidia-ml-py for serials and the driver version).
# It writes at most 8 files, no deeper than OUT/results/: the device tool brings back no more.
# Commit what it writes under bench/results/<date>-<card>/ with the command that ran it.
set -u -o pipefail
out=${1:-${OUT:?give an output directory or set OUT}}
device=${GPU_CHECK_DEVICE:-cuda}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 4
mkdir -p "$out/results"
export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
if [ "$device" = cpu ]; then duration=2; bench=(--device cpu); else duration=60; bench=(--device cuda --rounds 6 --seconds 3); fi

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
} >"$out/summary.txt" 2>&1
cat "$out/summary.txt"

status=0
step() {  # step NAME EXPECTED-EXIT COMMAND...: run, log, and compare the exit code with what it should be
  local name=$1 expected=$2; shift 2
  local began=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local code=$?
  local verdict=ok; [ "$code" = "$expected" ] || { verdict=UNEXPECTED; status=1; }
  printf '%-10s exit %s (expected %s) in %3ss: %s\n' "$name" "$code" "$expected" $((SECONDS - began)) "$verdict" | tee -a "$out/summary.txt"
  tail -n 25 "$out/$name.log"
}

# 1. The whole suite on every GPU; a pass needs the packaged baseline for this card.
step suite 0 "$py" -m harness.cli run --device "$device" --profile quick --duration "$duration" --results "$out/results"
# 2. One flipped bit in one product on GPU 0 must fail the run with DATA_MISMATCH.
step corrupt 1 "$py" -m harness.cli run --device "$device" --duration 5 --inject corrupt --results "$out/results"
# 3. A kernel that never ends on GPU 0 must end the run, within its limit, as incomplete (HANG).
step hang 2 "$py" -m harness.cli run --device "$device" --duration 5 --inject hang --hang-timeout 20 --results "$out/results"
# 4. The test's TFLOP/s against a bare torch.matmul loop, side by side.
step bench 0 "$py" bench/matmul_overhead.py "${bench[@]}"

echo "results: $(ls "$out/results" | wc -l) files in $out/results" | tee -a "$out/summary.txt"
exit $status
