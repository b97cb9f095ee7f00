"""The matmul test's TFLOP/s against a bare torch.matmul loop, same shape and dtype, one process.

    python bench/matmul_overhead.py                 # cuda if present, else cpu
    python bench/matmul_overhead.py --device cpu --size 512 --dtype fp32

Both sides run in this process, in alternating rounds (bare, harness, harness,
bare, ...) so that clock and thermal drift fall on both. The harness side runs as
the test's workers do (gputests.matmul.configure: deterministic mode on); the bare
side with torch's defaults (deterministic mode off). CUBLAS_WORKSPACE_CONFIG is
read once per process, so it applies to both. Each round pairs one run of each
side; the ratio is the median of the rounds' harness / bare ratios, printed with
their spread (the middle half of them), so one run tells whether a target is met.
The harness figure is what the test reports (median of timed windows); its duty
cycle (products over wall time, verification included) is printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from gputests import matmul  # noqa: E402


def bare(device: torch.device, dtype: str, size: int, seconds: float) -> float:
    """TFLOP/s of a plain loop of products, timed as a user would: total flops over total time."""
    a = matmul.pattern(size, size, matmul.DEFAULT_SEED, 1, device)
    b = matmul.pattern(size, size, matmul.DEFAULT_SEED, 2, device)
    if dtype in ("bf16", "fp16"):
        half = torch.bfloat16 if dtype == "bf16" else torch.float16
        a, b = a.to(half), b.to(half)
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    if dtype == "fp8":
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)

        def step() -> torch.Tensor:
            return torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    else:

        def step() -> torch.Tensor:
            return torch.matmul(a, b)

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        for _ in range(3):
            step()
        _sync(device)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for _ in range(8):
                step()
            count += 8
            _sync(device)
        elapsed = time.perf_counter() - began
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return 2.0 * size**3 * count / elapsed / 1e12


def harness(
    device: torch.device, dtype: str, size: int, ring: int, seconds: float, warmup: float
) -> tuple[float, float]:
    """(reported TFLOP/s, duty-cycle TFLOP/s) of the test's own burn."""
    result, _ = matmul.burn(device, dtype, size=size, ring=ring, duration_s=seconds, warmup_s=warmup)
    duty = result.flops_per_window * len(result.windows) / result.wall_s / 1e12
    return result.tflops, duty


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu")
    parser.add_argument("--index", type=int, default=0, help="CUDA device index")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp8", "tf32", "fp32"), default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--ring", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="per side per round")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    device = torch.device("cuda", args.index) if on_gpu else torch.device("cpu")
    dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    size = args.size or (8192 if on_gpu else 512)
    ring = args.ring or (8 if on_gpu else 2)
    seconds = args.seconds or (3.0 if on_gpu else 0.5)
    warmup = 1.0 if on_gpu else 0.2
    matmul.configure(device)

    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    print(
        f"matmul overhead: {name}, {dtype}, {size}^3, ring {ring}, "
        f"{args.rounds} rounds of {seconds:g} s per side, torch {torch.__version__}"
    )
    print(f"{'round':>5}  {'bare':>12}  {'harness':>12}  {'duty cycle':>12}  {'ratio':>6}")
    bares, harnesses, duties = [], [], []
    for r in range(args.rounds):
        order = ("bare", "harness") if r % 2 == 0 else ("harness", "bare")
        for side in order:
            if side == "bare":
                bares.append(bare(device, dtype, size, seconds))
            else:
                reported, duty = harness(device, dtype, size, ring, seconds, warmup)
                harnesses.append(reported)
                duties.append(duty)
        print(
            f"{r:>5}  {bares[-1]:>12.4g}  {harnesses[-1]:>12.4g}  {duties[-1]:>12.4g}"
            f"  {harnesses[-1] / bares[-1]:>6.3f}"
        )
    b, h, d = statistics.median(bares), statistics.median(harnesses), statistics.median(duties)
    ratios = [x / y for x, y in zip(harnesses, bares, strict=True)]
    duty_ratios = [x / y for x, y in zip(duties, bares, strict=True)]
    print(f"median TFLOP/s: bare {b:.4g}, harness {h:.4g} (duty cycle {d:.4g})")
    print(
        f"ratio harness/bare: {statistics.median(ratios):.3f} (middle half {_middle_half(ratios)})"
        f"  (duty cycle/bare: {statistics.median(duty_ratios):.3f}, middle half {_middle_half(duty_ratios)})"
    )
    return 0


def _middle_half(values: list[float]) -> str:
    if len(values) < 4:
        return "n/a: fewer than 4 rounds"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.3f} to {q3:.3f}"


if __name__ == "__main__":
    sys.exit(main())
