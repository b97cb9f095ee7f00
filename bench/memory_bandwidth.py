"""The memory test's verify bandwidth against a plain device copy and a plain reduction, one process.

    python bench/memory_bandwidth.py                       # cuda if present, else cpu
    python bench/memory_bandwidth.py --device cpu --mib 64 --rounds 8
    python bench/memory_bandwidth.py --device cpu --fused  # the GPU's fused kernels, compiled for the CPU

Three sides run in this process, in alternating rounds (their order rotates, so that
clock and thermal drift fall on all of them):

- verify: the test's round figure, through its worker functions (gputests.work.memory.burn
  over `--mib` of memory in the test's chunks): bytes verified by every pass over the
  verify kernels' time;
- copy: `dst.copy_(src)` over buffers of the same size, bytes read plus written over
  the time of the loop;
- read: a plain reduction (`src.view(float32).sum()`), bytes read over time.

Each round pairs one run of each side; the ratio verify/copy is the median of the
rounds' ratios, printed with their spread (the middle half of them), and so is the
ratio verify/read, the one to compare with a test that reads once per verify. Then,
per pattern, its median verify GB/s (the test's `memory.<pattern>.verify.gbps`) over the
median copy and read: each verify reads the memory once, so a pattern well under the
read is one whose verify costs more than a read. Also printed: on CUDA the time to
compile the fused kernels of the generated patterns (before anything is timed), and
the wall time of one round of every pattern over the memory held; and the coverage
the test would reach on this GPU (90% of its free memory, measured before this script
allocates) and how long one round of every pattern would take over it (the measured
round, scaled by bytes).
"""

from __future__ import annotations

import collections
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from bench import rounds  # noqa: E402
from gputests.work import memory, memory_patterns  # noqa: E402

FRACTION = 0.9
"""The share of free memory the test takes (harness.groups: MemorySection.fraction)."""


def verify(chunks: list[torch.Tensor], seconds: float, per_pattern: dict[str, list[float]]) -> float:
    """The test's verify GB/s over `seconds` of its patterns: bytes verified over verify time."""
    verified = [0, 0.0]

    def collect(result: memory.PatternResult) -> None:
        if result.bad_words:
            raise RuntimeError(f"{result.bad_words} bad words in {result.pattern}: this device is not fit to measure")
        verified[0] += result.bytes_verified
        verified[1] += result.seconds
        per_pattern[result.pattern].extend(result.windows)

    memory.burn(chunks, memory.PATTERNS, duration_s=seconds, on_result=collect)
    return verified[0] / max(verified[1], 1e-12) / 1e9


def copy(src: torch.Tensor, dst: torch.Tensor, seconds: float) -> float:
    """GB/s of a plain loop of copies: bytes read plus written over the loop's time."""
    return _loop(lambda: dst.copy_(src), 2 * src.numel() * src.element_size(), src.device, seconds)


def read(src: torch.Tensor, seconds: float) -> float:
    """GB/s of a plain loop of reductions: bytes read over the loop's time."""
    floats = src.view(torch.float32)
    return _loop(lambda: floats.sum(), src.numel() * src.element_size(), src.device, seconds)


def _loop(step: Callable[[], object], nbytes: int, device: torch.device, seconds: float) -> float:
    step()
    rounds.sync(device)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(4):
            step()
        count += 4
        rounds.sync(device)
    return nbytes * count / (time.perf_counter() - began) / 1e9


def one_round(chunks: list[torch.Tensor]) -> float:
    """Wall seconds of one round of every pattern (writes, verifies and syncs included)."""
    rounds.sync(chunks[0].device)
    began = time.perf_counter()
    memory.burn(chunks, memory.PATTERNS, duration_s=0.0)
    rounds.sync(chunks[0].device)
    return time.perf_counter() - began


def main() -> int:
    parser = rounds.parser(__doc__.splitlines()[0], rounds=8)
    parser.add_argument("--mib", type=int, default=None, help="memory per side (the test's, the copy's, the read's)")
    parser.add_argument("--chunk-mib", type=int, default=None, help="the test's chunk size")
    parser.add_argument("--seconds", type=float, default=None, help="per side per round")
    parser.add_argument(
        "--threads", type=int, default=memory.CPU_THREADS, help="CPU threads (default: as the test's CPU worker)"
    )
    parser.add_argument(
        "--fused",
        action="store_true",
        help="on the CPU, run the generated patterns as the GPU does: fused kernels (torch.compile, C++ here)",
    )
    args = parser.parse_args()
    if args.fused:
        memory_patterns.FUSED_ON = memory_patterns.FUSED_ON | {args.device}
    on_gpu = args.device == "cuda"
    device = rounds.device(args)
    mib = args.mib or (4096 if on_gpu else 64)
    chunk_mib = args.chunk_mib or (1024 if on_gpu else 16)
    seconds = args.seconds or (2.0 if on_gpu else 0.5)
    if on_gpu:
        torch.cuda.set_device(device)
        free, total = torch.cuda.mem_get_info(device)
    else:
        torch.set_num_threads(args.threads)

    held = memory.allocate(device, fraction=1.0, chunk_bytes=chunk_mib << 20, max_bytes=mib << 20)
    src = torch.full((held.nbytes // 4,), 0x3F800000, dtype=torch.int32, device=device)  # 1.0f: no NaN, no denormal
    dst = torch.empty_like(src)
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    threads = "" if on_gpu else f", {torch.get_num_threads()} threads"
    print(
        f"memory bandwidth: {name}, {held.nbytes / 2**20:.0f} MiB in {len(held.chunks)} chunks{threads}, "
        f"{args.rounds} rounds of {seconds:g} s per side, torch {torch.__version__}"
    )
    if device.type in memory_patterns.FUSED_ON:
        began = time.perf_counter()
        memory_patterns.FUSED.warm(held.chunks)
        print(f"compiling the fused kernels: {time.perf_counter() - began:.1f} s")
    round_s = one_round(held.chunks)  # also the warm-up: every page touched, every kernel loaded
    print(f"one round of every pattern over {held.nbytes / 2**20:.0f} MiB: {round_s:.3f} s")
    print(f"{'round':>5}  {'verify':>10}  {'copy':>10}  {'read':>10}  {'v/copy':>7}  {'v/read':>7}   (GB/s)")
    sides: dict[str, list[float]] = {"verify": [], "copy": [], "read": []}
    per_pattern: dict[str, list[float]] = collections.defaultdict(list)
    for r in range(args.rounds):
        order = list(sides)
        for side in order[r % 3 :] + order[: r % 3]:  # rotate, so drift falls on every side alike
            if side == "verify":
                sides[side].append(verify(held.chunks, seconds, per_pattern))
            elif side == "copy":
                sides[side].append(copy(src, dst, seconds))
            else:
                sides[side].append(read(src, seconds))
        row = {side: values[-1] for side, values in sides.items()}
        print(
            f"{r:>5}  {row['verify']:>10.4g}  {row['copy']:>10.4g}  {row['read']:>10.4g}"
            f"  {row['verify'] / row['copy']:>7.3f}  {row['verify'] / row['read']:>7.3f}"
        )
    medians = {side: statistics.median(values) for side, values in sides.items()}
    by_copy = [v / c for v, c in zip(sides["verify"], sides["copy"], strict=True)]
    by_read = [v / c for v, c in zip(sides["verify"], sides["read"], strict=True)]
    print(f"median GB/s: verify {medians['verify']:.4g}, copy {medians['copy']:.4g}, read {medians['read']:.4g}")
    print(f"ratio verify/copy: {statistics.median(by_copy):.3f} (middle half {rounds.middle_half(by_copy)})")
    print(f"ratio verify/read: {statistics.median(by_read):.3f} (middle half {rounds.middle_half(by_read)})")
    print(f"{'pattern':>18}  {'verify':>10}  {'v/copy':>7}  {'v/read':>7}   (median GB/s of its passes)")
    for pattern, values in per_pattern.items():
        median = statistics.median(values)
        print(f"{pattern:>18}  {median:>10.4g}  {median / medians['copy']:>7.3f}  {median / medians['read']:>7.3f}")
    if on_gpu:
        take = min(int(free * FRACTION), free - memory.WORKSPACE_BYTES)
        print(
            f"at {FRACTION:.0%} of free memory ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free before this run): "
            f"coverage {take / total:.3f}, one round of every pattern about {round_s * take / held.nbytes:.1f} s "
            f"(scaled from {held.nbytes / 2**30:.1f} GiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
