"""The training test's step time with its fingerprints against the same steps without, one process.

    python bench/train_overhead.py                        # cuda if present (the test's GPU model), else cpu
    python bench/train_overhead.py --device cpu --rounds 4

Both sides run the test's own loop (gputests.work.train.train) on the model the test trains
on the device (harness/groups.py: the GPU default, or the CPU self-test's tiny one),
deterministic mode on, in alternating rounds (bare, fingerprinted, fingerprinted, bare, ...)
so that clock and thermal drift fall on both. "Bare" leaves out only what the vote costs:
each step's loss and gradient-norm bits and the checksums of the updated parameters (the
windows, their timing and their copies to the host stay). A step's time is the device time of
the timed windows over their steps; the ratio is the median of the rounds' fingerprinted /
bare ratios, printed with their spread (the middle half). The goal on a GPU: under 1.03.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, installed or not

from bench import rounds  # noqa: E402
from gputests.work import train, train_model, train_run  # noqa: E402
from harness import groups  # noqa: E402
from harness.groups import TrainSection  # noqa: E402
from harness.workers import Message  # noqa: E402

GOAL = 1.03


def step_seconds(device: torch.device, job: train.Job) -> tuple[float, int]:
    """(seconds per step over the timed windows, steps timed) of one run of the test's loop."""
    got: list[Message] = []
    train.train(device, job, on_window=got.append)
    timed = [w for w in got if isinstance(w, train.Window) and w.timed]
    steps = sum(w.tokens for w in timed) // train_model.tokens_per_step(job.shape)
    return sum(w.seconds for w in timed) / max(steps, 1), steps


def main() -> int:
    parser = rounds.parser(__doc__.splitlines()[0], rounds=6)
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per side per round")
    parser.add_argument("--layers", type=int, default=None, help="override the model's layers (a smaller run)")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    device = rounds.device(args)
    if on_gpu:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)  # as a stand-in device's worker runs
    train.configure(device)
    group = groups.GROUPS["train"]
    shape = group.gpu if on_gpu else group.cpu
    assert isinstance(shape, TrainSection)
    if args.layers:
        shape = dataclasses.replace(shape, layers=args.layers)
    seconds = args.seconds or (3.0 if on_gpu else 0.5)
    base = train.Job(
        shape=shape,
        duration_s=seconds,
        warmup_s=1.0 if on_gpu else 0.2,
    )
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    print(
        f"train overhead: {name}, {shape.layers} layers, d_model {shape.d_model}, {shape.heads} heads, "
        f"seq {shape.seq}, batch {shape.batch}, {shape.dtype}; {args.rounds} rounds of {seconds:g} s per side, "
        f"torch {torch.__version__}"
    )
    print(f"{'round':>5}  {'bare ms':>9}  {'prints ms':>9}  {'ratio':>6}  {'steps':>9}")
    sides: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        counts = []
        for fingerprints in (False, True) if r % 2 == 0 else (True, False):
            per_step, steps = step_seconds(device, dataclasses.replace(base, fingerprints=fingerprints))
            sides[fingerprints].append(per_step)
            counts.append(steps)
        bare, printed = sides[False][-1], sides[True][-1]
        print(
            f"{r:>5}  {bare * 1e3:>9.3f}  {printed * 1e3:>9.3f}  {printed / bare:>6.3f}  {counts[0]:>4}/{counts[1]:<4}"
        )
    ratios = [p / b for p, b in zip(sides[True], sides[False], strict=True)]
    bare_ms, printed_ms = statistics.median(sides[False]) * 1e3, statistics.median(sides[True]) * 1e3
    tokens_per_s = train_model.tokens_per_step(shape) / (printed_ms / 1e3)
    print(f"median step ms: bare {bare_ms:.3f}, with fingerprints {printed_ms:.3f}")
    print(f"tokens/s with fingerprints: {tokens_per_s:.4g}")
    peak = train_run.PEAK_TFLOPS.get(name)
    if peak is not None:
        mfu = tokens_per_s * train_model.flops_per_token(shape) / (peak * 1e12)
        print(f"MFU with fingerprints: {mfu:.3f} of {peak:g} TFLOP/s")
    ratio = statistics.median(ratios)
    verdict = (f"goal {GOAL:g}: {'met' if ratio < GOAL else 'NOT met'}") if on_gpu else "the goal is for a GPU"
    print(f"ratio fingerprinted/bare: {ratio:.3f} (middle half {rounds.middle_half(ratios)}); {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
