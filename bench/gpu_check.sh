#!/usr/bin/env bash
# The real-GPU check, in one script that fits a lent GPU machine's lease: under 7 minutes on
# one H100 or H200 by its own clock, what has never run on a GPU first, and every step judged
# by what it left behind (its result file's verdict and findings, or its log), never by its
# exit code alone: a Python traceback exits 1, as a failed run does.
#
#   bench/gpu_check.sh [OUT_DIR]                          # default: $OUT (the device tool's output folder)
#   GPU_CHECK_DEVICE=cpu bench/gpu_check.sh /tmp/check    # the dry run, on a machine without a GPU
#
# Through the device tool: run with command `bench/gpu_check.sh "$OUT"` and timeout_s 420 (the
# script ends within its budget, 340 s, plus a step's 10 s grace to die; the rest is margin).
#
# Steps, in order, with the estimate of each on one H100 (seconds, from the H200 runs of
# 2026-11-28 in bench/results/2026-11-28-h200*: a `gpu-burnin run` step costs about 16 s
# besides its burn, for starting its processes and CUDA; the memory test's first run also
# compiles its fused kernels, cold: the least known figure, 30 s assumed; its later runs
# find them in torch's cache):
#
#   step          what it runs                                                  expects                               est
#   imports       the packages (torch that sees a GPU, numpy, pytest, pandas,    all essential ones there: else stop     8
#                 nvidia-ml-py, triton); prometheus_client and kubernetes named
#   train         -m train, 6 s (one GPU: each step run twice from the same      pass, train.* figures, telemetry       30
#                 state and compared, so two runs' fingerprints must agree)
#   traincorrupt  -m train --inject train.corrupt, 2 s                          fail: DATA_MISMATCH (GPU 0)            25
#   memory        -m "health or memory", 6 s, real NVML                          pass, memory.* figures, snapshots      58
#                                                                                from nvml, telemetry during the burn
#   memcorrupt    -m memory --inject memory.corrupt, 2 s                         fail: DATA_MISMATCH, OVER_LIMIT (GPU0) 28
#   memhang       -m memory --inject memory.hang --hang-timeout 6                fail: HANG (GPU 0)                     30
#   xid           bench/xid_events.py: NVML Xid event registration              every GPU registered, wait timed out    4
#   pcie          -m pcie, 4 s                                                   pass, pcie.* figures                   24
#   interconnect  -m "nvlink or nccl", 3 s (one GPU: NCCL's join, the checks,   pass (see below)                       30
#                 the timing, nothing to measure)
#   matmul        -m matmul, 7.5 s                                               pass, matmul.* figures                 33
#   corrupt *     -m matmul --inject matmul.corrupt, 2.5 s                       fail: DATA_MISMATCH (GPU 0)            29
#   hang *        -m matmul --inject matmul.hang --hang-timeout 6                fail: HANG (GPU 0)                     27
#   usable        bench/gpu_usable.py: right after the hangs' kernels were killed  "usable"                             15
#   bench *       bench/matmul_overhead.py, 2 rounds of 0.75 s                   its ratio and duty cycle printed       14
#   membench      bench/memory_bandwidth.py, 2 rounds of 0.75 s                  its figures and compile time printed   16
#   tests         pytest, not slow: tests/test_devices.py (the driver's GPUs     all passed                            22
#                 and NVML facts) and tests/test_plugin.py (the plugin loaded
#                 from an uninstalled checkout, as here)
#                                                                                            in all  393; without *  323
#
# * Ran on the H200s of 2026-11-28 (bench/results/2026-11-28-h200*): on a GPU these run only with
#   GPU_CHECK_PROVEN=1 (and a budget to match, GPU_CHECK_BUDGET_S=400), so that what has never run on
#   a GPU fits in 6 minutes; the CPU dry run runs them always.
#
# The training test's estimates are the least known after the memory test's compile: it has never
# run on a GPU (a step of its default model is about 100 ms on an H100 by estimate, its model is
# built and its kernels chosen in the first seconds, inside the profile's 2 s warm-up).
#
# The interconnect step with one GPU: each test reports NOTHING_TO_TEST (info: the 1-GPU
# baseline, which a 1-GPU H100 or H200 box matches since baselines match on the GPU count,
# requires no figure between GPUs) and the run passes, as docs/baselines.md says a 1-GPU box
# can. With two GPUs or more it must pass with nvlink.* and nccl.* figures.
#
# Time: GPU_CHECK_BUDGET_S (default 340 s on a GPU, 600 on the CPU) is shared by the steps in
# order; a step starts only if its estimate fits in what is left, and its limit (each step's
# own, three times as long in the dry run) is at most what is left, so the script ends in time
# whatever a step does. A step that does not fit is SKIPPED-for-time, which like an UNEXPECTED
# step makes the exit status 1. Each step's line says how long it took against its estimate;
# the last lines give the total.
#
# Judging: `python -m bench.expect` (bench/expect.py): for a run, the newest result file in the
# step's own results directory must be finished, with the verdict and the finding codes (and
# GPUs) expected, no other finding that fails or stops the run, and an exit code equal to its
# verdict's. The runs go with prometheus_client and kubernetes blocked from import, proving
# that `gpu-burnin run` needs neither (the lent machine may lack them, and nothing can be
# installed there).
#
# The dry run (GPU_CHECK_DEVICE=cpu): the same steps on the CPU self-test with one stand-in
# device (as the lent machine has one GPU), health from the simulated NVML scenario
# healthy.toml (snapshots from `sim`), judged by a 1-device variant of the CPU self-test's
# baseline made as baselines/generate.py makes the 1-GPU files; gpu_usable.py must say there is
# no CUDA device (exit 2), and the tests step runs tests/test_devices.py alone.
# tests/test_bench.py runs it (a slow test).
#
# Nothing is installed: it runs from the checkout with the machine's python3 ($PYTHON).
# Exit 0: every step as expected; 1: not (or essential packages missing: it stops early);
# 4: bad arguments.
#
# Output: two files in OUT_DIR, since the device tool brings back at most 8: summary.txt (date,
# command, commit, host, the packages and their versions, the card, its driver and state before
# and after, one line per step) and gpu_check.tgz (each step's log and results directory).
# Commit both under bench/results/<date>-<card>/ (such as 2026-12-08-h100), the archive
# unpacked (`tar xzf gpu_check.tgz`) and removed, with a README.md that gives the command
# that ran it, the tree's commit (the summary's `commit:` line is the device machine's copy
# of .git, which may be stale), what the run showed and the figures against the floors, and
# add the folder to bench/results/README.md.
set -u -o pipefail
out=${1:-${OUT:?give an output directory or set OUT}}
device=${GPU_CHECK_DEVICE:-cuda}
case "$device" in cuda | cpu) ;; *) echo "gpu_check: GPU_CHECK_DEVICE must be cuda or cpu, not $device" >&2; exit 4 ;; esac
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 4
mkdir -p "$out" || exit 4
work=$(mktemp -d)
trap 'cp "$work/summary.txt" "$out/" 2>/dev/null; tar czf "$out/gpu_check.tgz" -C "$work" --exclude=./blocked --exclude=./baselines . ; rm -rf "$work"' EXIT
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
on_gpu() { [ "$device" = cuda ]; }
pick() { if on_gpu; then echo "$1"; else echo "$2"; fi; }  # pick GPU-VALUE CPU-VALUE
budget=${GPU_CHECK_BUDGET_S:-$(pick 340 600)}
proven=${GPU_CHECK_PROVEN:-$(pick 0 1)}  # the steps marked * in the header
began=$SECONDS
summary="$work/summary.txt"
say() { echo "$*" | tee -a "$summary"; }

# What a run must not import (a stand-in that fails as a missing package does).
for name in prometheus_client kubernetes; do
  mkdir -p "$work/blocked/$name"
  echo "raise ImportError('$name: blocked by bench/gpu_check.sh: a run without a metrics file must not import it')" \
    >"$work/blocked/$name/__init__.py"
done
blocked="$work/blocked:$PYTHONPATH"

run=(--device "$device")
health=nvml
if ! on_gpu; then
  mkdir -p "$work/baselines"
  "$py" - "$work/baselines/cpu-selftest-1.toml" <<'PY' || exit 4
import sys
from pathlib import Path
from baselines.generate import single_gpu
text = single_gpu(Path("baselines/cpu-selftest.toml"), "CPU self-test, 1 device", "The CPU self-test's one stand-in device")
Path(sys.argv[1]).write_text(text)
PY
  run+=(--cpu-devices 1 --nvml sim:harness/nvml/scenarios/healthy.toml --baseline-dir "$work/baselines")
  health=sim
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: bench/gpu_check.sh (GPU_CHECK_DEVICE=$device, budget ${budget} s)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) (this machine's .git; may be stale)"
  echo "host: $(uname -srm), $(nproc) CPUs"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,pstate,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm,pcie.link.gen.current,pcie.link.width.current,clocks_event_reasons.active --format=csv
  fi
} >"$summary" 2>&1
cat "$summary"

status=0
counts=(0 0 0)  # as expected, UNEXPECTED, SKIPPED-for-time
expect=()
scale=$(pick 1 3)  # the CPU stand-ins of the dry run share a machine that other work may load
allowed() {  # allowed LIMIT: a step's limit in seconds (scaled on the CPU), at most what is left of the budget
  local limit=$(($1 * scale)) left=$((budget - (SECONDS - began)))
  echo $((limit < left ? limit : left))
}
# step NAME ESTIMATE LIMIT KIND COMMAND...: run COMMAND if ESTIMATE fits in what is left of the
# budget, for at most LIMIT seconds (from `allowed`), then judge it with `bench.expect KIND` and
# "${expect[@]}": KIND `result` reads the step's results directory ($work/NAME), `log` its log.
step() {
  local name=$1 estimate=$2 limit=$3 kind=$4
  shift 4
  local left=$((budget - (SECONDS - began)))
  if [ "$left" -lt "$estimate" ]; then
    say "$(printf '%-12s SKIPPED-for-time: needs about %s s, %s s of the budget left' "$name" "$estimate" "$left")"
    counts[2]=$((counts[2] + 1)); status=1
    return
  fi
  [ "$limit" -ge 1 ] || limit=1  # `timeout 0` would mean no limit at all
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$work/$name.log" 2>&1
  local code=$?
  local took=$((SECONDS - t0))
  local target="$work/$name.log"
  [ "$kind" = result ] && target="$work/$name"
  local judged
  judged=$("$py" -m bench.expect "$kind" "$target" --exit "$code" "${expect[@]}" 2>&1)
  local verdict=ok
  if [ "$code" = 124 ] || [ "$code" = 137 ]; then
    judged="timed out after ${limit} s; $judged"
    verdict=UNEXPECTED
  elif [[ "$judged" != ok:* ]]; then
    verdict=UNEXPECTED
  fi
  if [ "$verdict" = ok ]; then counts[0]=$((counts[0] + 1)); else counts[1]=$((counts[1] + 1)); status=1; fi
  say "$(printf '%-12s %-10s %4s s (est %3s)  %s' "$name" "$verdict" "$took" "$estimate" "${judged#ok: }")"
  [ "$verdict" = ok ] || tail -n 20 "$work/$name.log"
}
burn() {  # burn NAME ESTIMATE LIMIT GPU-BURNIN-RUN-ARGS...: a `gpu-burnin run` step, judged by its result file
  local name=$1 estimate=$2 limit
  limit=$(allowed "$3")
  shift 3
  # Its own watchdog first (it records the run as abandoned), the step's limit after.
  step "$name" "$estimate" "$limit" result env PYTHONPATH="$blocked" "$py" -m harness.cli run "${run[@]}" "$@" \
    --results "$work/$name" --timeout $((limit >= 25 ? limit - 10 : limit))
}

# -- first: can anything run at all?
expect=(--line '^ok: ')
step imports 8 "$(allowed 60)" log "$py" -m bench.expect imports --device "$device"
grep '^  ' "$work/imports.log" >>"$summary"  # the packages and their versions (on the screen already if UNEXPECTED)
if [[ $(tail -n 1 "$work/imports.log") == ok:* ]]; then grep '^  ' "$work/imports.log"; else
  say "gpu_check: stopped: $(tail -n 1 "$work/imports.log")"
  exit 1
fi
gpus=1
if on_gpu; then gpus=$(sed -n 's/^  torch.cuda: \([0-9]*\) GPU.*/\1/p' "$work/imports.log"); gpus=${gpus:-1}; fi

# -- what has never run on a GPU: training (a lone GPU compares each step with a second run of it),
# then memory, with health from the driver's NVML around it
expect=(--verdict pass --measured 'train.*' --telemetry)
burn train 30 90 -m train --duration "$(pick 6 2)"
expect=(--verdict fail --codes DATA_MISMATCH@0)
burn traincorrupt 25 75 -m train --duration "$(pick 2 1)" --inject train.corrupt
expect=(--verdict pass --measured 'memory.*' --health "$health" --telemetry)
burn memory 58 150 -m "health or memory" --duration "$(pick 6 2)"
expect=(--verdict fail --codes DATA_MISMATCH@0 OVER_LIMIT@0)
burn memcorrupt 28 75 -m memory --duration "$(pick 2 1)" --inject memory.corrupt
expect=(--verdict fail --codes HANG@0)
burn memhang 30 75 -m memory --duration "$(pick 2 1)" --inject memory.hang --hang-timeout "$(pick 6 4)"
expect=(--line '^xid events: registered on ([1-9][0-9]*) of \1 GPUs; ')
step xid 4 "$(allowed 30)" log env PYTHONPATH="$blocked" "$py" bench/xid_events.py --nvml "$(pick real sim:harness/nvml/scenarios/healthy.toml)"
expect=(--verdict pass --measured 'pcie.*' --health "$health" --telemetry)
burn pcie 24 60 -m pcie --duration "$(pick 4 1)"
if [ "$gpus" -ge 2 ]; then
  expect=(--verdict pass --measured 'nvlink.*' 'nccl.*' --health "$health")
else  # see the header: NOTHING_TO_TEST (info) for each, nothing required between GPUs of a 1-GPU box
  expect=(--verdict pass --codes NOTHING_TO_TEST@0=info --health "$health")
fi
burn interconnect 30 90 -m "nvlink or nccl" --duration "$(pick 3 1)"

# -- then matmul, which has run on H200s before
expect=(--verdict pass --measured 'matmul.*' --health "$health" --telemetry)
burn matmul 33 90 -m matmul --duration "$(pick 7.5 2)"
if [ "$proven" = 1 ]; then
  expect=(--verdict fail --codes DATA_MISMATCH@0)
  burn corrupt 29 75 -m matmul --duration "$(pick 2.5 1)" --inject matmul.corrupt
  expect=(--verdict fail --codes HANG@0)
  burn hang 27 75 -m matmul --duration "$(pick 2.5 1)" --inject matmul.hang --hang-timeout "$(pick 6 4)"
else
  say "corrupt, hang: not run (they ran on the H200s of 2026-11-28; GPU_CHECK_PROVEN=1 runs them)"
fi
# The GPU must compute right once the hung kernels' processes are gone; on the CPU it says there is no GPU.
expect=(--want-exit "$(pick 0 2)" --line "$(pick ': usable$' '^no CUDA device$')")
step usable 15 "$(allowed 45)" log env PYTHONPATH="$blocked" "$py" bench/gpu_usable.py

# -- the benches: the test's figures against plain loops
if [ "$proven" = 1 ]; then
  expect=(--line '^median TFLOP/s: ' '^ratio harness/bare: ' '^duty cycle')
  step bench 14 "$(allowed 60)" log "$py" bench/matmul_overhead.py --device "$device" --rounds 2 --seconds 0.75 \
    $(pick "" "--size 256")
else
  say "bench: not run (it ran on the H200s of 2026-11-28; GPU_CHECK_PROVEN=1 runs it)"
fi
expect=(--line "$(pick '^compiling the fused kernels: ' '^one round')" '^median GB/s: ' '^ratio verify/copy: ' '^ +random ')
step membench 16 "$(allowed 60)" log "$py" bench/memory_bandwidth.py --device "$device" --rounds 2 --seconds 0.75

# -- gpu-burnin's own tests that touch a device, from this checkout (uninstalled, as here)
expect=(--line '^[0-9]+ passed')
if on_gpu; then
  tests=(tests/test_devices.py tests/test_plugin.py)
else
  tests=(tests/test_devices.py)
fi
step tests 22 "$(allowed 600)" log "$py" -m pytest "${tests[@]}" -q -p no:cacheprovider -m "not slow"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,temperature.gpu,power.draw,clocks.sm,clocks_event_reasons.active --format=csv 2>&1 |
    tee -a "$summary"
fi
say "total: $((SECONDS - began)) s of a ${budget} s budget; ${counts[0]} steps as expected, ${counts[1]} UNEXPECTED, ${counts[2]} SKIPPED-for-time"
say "gpu_check: $([ "$status" = 0 ] && echo "every step as expected" || echo "NOT every step as expected")"
exit $status
