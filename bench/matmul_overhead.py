"""The matmul test's TFLOP/s against a bare torch.matmul loop, same shape and dtype, one process.

    python bench/matmul_overhead.py                 # cuda if present, else cpu
    python bench/matmul_overhead.py --device cpu --size 512 --dtype fp32

Both sides run in this process, in alternating rounds (bare, harness, harness,
bare, ...) so that clock and thermal drift fall on both. The harness side runs as
the test's workers do (gputests.work.matmul.configure: deterministic mode on); the bare
side with torch's defaults (deterministic mode off). CUBLAS_WORKSPACE_CONFIG is
read once per process, so it applies to both. Each round pairs one run of each
side; the ratio is the median of the rounds' harness / bare ratios, printed with
their spread (the middle half of them), so one run tells whether a target is met.
The harness figure is what the test reports (median of timed windows). Beside it:
a bare loop that multiplies into one preallocated output as the test does (to tell
the allocation's cost from the harness's), the harness's throughput over wall time
with its corruption check included, and the duty cycle, the share of wall time the
GPU spends in products (with check / harness).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from bench import rounds  # noqa: E402
from gputests.work import matmul  # noqa: E402


def bare(device: torch.device, dtype: str, size: int, seconds: float, *, into: bool = False) -> float:
    """TFLOP/s of a plain loop of products, timed as a user would: total flops over total time.

    With `into`, each product goes into one preallocated output (`out=`), as the test's do;
    without, torch allocates a new one each time."""
    a = matmul.pattern(size, size, matmul.DEFAULT_SEED, 1, device)
    b = matmul.pattern(size, size, matmul.DEFAULT_SEED, 2, device)
    if dtype in ("bf16", "fp16"):
        half = torch.bfloat16 if dtype == "bf16" else torch.float16
        a, b = a.to(half), b.to(half)
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    if dtype == "fp8":
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device=device)

        target = torch.empty(size, size, dtype=torch.bfloat16, device=device)

        def step() -> torch.Tensor:
            return torch._scaled_mm(
                a8,
                b8,
                scale_a=one,
                scale_b=one,
                out_dtype=torch.bfloat16,
                use_fast_accum=matmul.FP8_FAST_ACCUM,
                **({"out": target} if into else {}),
            )
    else:
        target = torch.matmul(a, b)

        def step() -> torch.Tensor:
            return torch.matmul(a, b, out=target) if into else torch.matmul(a, b)

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        for _ in range(3):
            step()
        rounds.sync(device)
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for _ in range(8):
                step()
            count += 8
            rounds.sync(device)
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


def main() -> int:
    parser = rounds.parser(__doc__.splitlines()[0], rounds=16)
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp8", "tf32", "fp32"), default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--ring", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="per side per round")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    device = rounds.device(args)
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
    print(
        f"{'round':>5}  {'bare':>10}  {'bare out=':>10}  {'harness':>10}  {'with check':>10}  {'ratio':>6}  {'duty':>6}"
    )
    sides: dict[str, list[float]] = {"bare": [], "into": [], "harness": [], "checked": []}
    for r in range(args.rounds):
        order = ["bare", "into", "harness"]
        for side in order[r % 3 :] + order[: r % 3]:  # rotate, so drift falls on every side alike
            if side == "harness":
                reported, duty = harness(device, dtype, size, ring, seconds, warmup)
                sides["harness"].append(reported)
                sides["checked"].append(duty)
            else:
                sides[side].append(bare(device, dtype, size, seconds, into=side == "into"))
        row = {name: values[-1] for name, values in sides.items()}
        print(
            f"{r:>5}  {row['bare']:>10.4g}  {row['into']:>10.4g}  {row['harness']:>10.4g}  {row['checked']:>10.4g}"
            f"  {row['harness'] / row['bare']:>6.3f}  {row['checked'] / row['harness']:>6.3f}"
        )
    medians = {name: statistics.median(values) for name, values in sides.items()}
    ratios = [x / y for x, y in zip(sides["harness"], sides["bare"], strict=True)]
    duties = [x / y for x, y in zip(sides["checked"], sides["harness"], strict=True)]
    print(
        f"median TFLOP/s: bare {medians['bare']:.4g}, bare out= {medians['into']:.4g}, "
        f"harness {medians['harness']:.4g}, with its check {medians['checked']:.4g}"
    )
    print(f"ratio harness/bare: {statistics.median(ratios):.3f} (middle half {rounds.middle_half(ratios)})")
    print(
        f"duty cycle (GEMM time / wall time, check included): {statistics.median(duties):.3f} "
        f"(middle half {rounds.middle_half(duties)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
