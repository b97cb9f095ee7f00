"""NCCL all-reduce, worker side: one rank per GPU, a size sweep, every reduction checked exactly.

Each worker joins the others as one rank of a torch.distributed group (NCCL between
GPUs, gloo on the CPU stand-in; harness/distributed.py owns both), then does what the
parent says, all ranks at once:

- `Sweep`: for one size, a checked all-reduce, timed windows of back-to-back
  all-reduces (nccl-tests' -n), and a second checked all-reduce. Rank r's element i
  is h(i) + r mod 17, with h(i) < 64 from a multiplicative hash of i mod a prime: the
  sum over n ranks is n h(i) + sum(r mod 17), an integer well under 2^24, so fp32
  holds it exactly and any wrong, lost or misplaced element is seen.
- `Measure`: timed windows within a subgroup of ranks (the pairwise search); the
  ranks outside it only make the subgroup, as every rank must.

A join or a collective that does not complete within its limit ends with `Stuck`,
one that fails because a peer died with `PeerLost`: both are the other ranks'
problem, which the parent attributes (gputests/work/nccl_run.py). The fault points: the
first is before the rank joins (`nccl.hang` never joins), the next after each
checked all-reduce (`nccl.hang@2` hangs among the collectives; `corrupt` changes
this rank's reduced buffer).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from harness import distributed
from harness.workers import Message
from harness.workers.devicetest import Context

PERIOD = 65521
"""The pattern repeats with this period (a prime): a misplaced block of elements shows."""
MULTIPLIER = 2654435761
CHUNK = 1 << 26
"""Elements filled or checked at once (256 MiB of fp32)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    rendezvous: distributed.Rendezvous
    rank: int
    world: int
    iterations: int
    """All-reduces per timed window."""
    windows: int
    """Timed windows per size, after one warm-up window; the same on every rank."""
    join_limit_s: float
    limit_s: float
    """How long one collective step (a window, a check) may wait for the others."""


# -- parent to worker -------------------------------------------------------------


class Command(Message):
    """What the parent tells the ranks, all of them at once: `Sweep`, `Measure` or `Stop`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sweep(Command):
    nbytes: int
    """Bytes per rank."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measure(Command):
    """Time all-reduces within each of `sets` at once, disjoint sets of ranks (every rank makes
    every subgroup, in order, and times in its own)."""

    sets: tuple[tuple[int, ...], ...]
    nbytes: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stop(Command):
    pass


# -- worker to parent ---------------------------------------------------------------


class Answer(Message):
    """Every rank's answer to a step: `Joined`, `Swept`, `Timed`, or how it could not (`RankEnd`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Joined(Answer):
    backend: str
    version: str
    nvls: str
    """Whether NCCL uses NVLink SHARP (NVLS) on this node, from its log: yes, no, or unknown."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Swept(Answer):
    nbytes: int
    seconds: tuple[float, ...]
    """Seconds per all-reduce, per timed window."""
    checked: int
    """Elements checked (two checked all-reduces)."""
    bad: int
    first_bad: int
    """The index of the first wrong element, or -1."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timed(Answer):
    ranks: tuple[int, ...]
    """The set this rank timed in; empty for a rank in none."""
    seconds: tuple[float, ...]
    """Seconds per all-reduce per window."""


class RankEnd(Answer):
    """This rank cannot go on, through no fault of its own that it can see."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stuck(RankEnd):
    what: str
    waited_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeerLost(RankEnd):
    error: str


def worker(ctx: Context, job: Job) -> None:
    device = ctx.torch_device
    log = _nccl_log() if device.type == "cuda" else None
    ctx.progress("joining")
    ctx.fault_point()  # a rank that never joins
    backend = distributed.backend_for(device)
    try:
        distributed.join(
            job.rendezvous,
            rank=job.rank,
            world=job.world,
            backend=backend,
            device=device,
            limit_s=job.join_limit_s,
            on_wait=ctx.progress,
        )
    except distributed.Stuck as err:
        ctx.send(Stuck(what=err.what, waited_s=err.waited_s))
        return
    facts = distributed.backend_facts(backend)
    ctx.send(Joined(backend=backend, version=facts["version"], nvls=nvls_use(log)))  # NCCL starts at the join
    table = torch.tensor([_h(i) for i in range(PERIOD)], dtype=torch.float32, device=device)
    try:
        while True:
            command = ctx.recv(Command, waiting="waiting for the next all-reduce")
            if isinstance(command, Stop):
                break
            if isinstance(command, Sweep):
                ctx.send(_sweep(ctx, job, table, command.nbytes))
            elif isinstance(command, Measure):
                ctx.send(_measure(ctx, job, command))
    except distributed.Stuck as err:
        ctx.send(Stuck(what=err.what, waited_s=err.waited_s))
        return  # a collective may still be pending: leave without waiting for it
    except distributed.PeerLost as err:
        ctx.send(PeerLost(error=str(err)))
        return
    distributed.leave()


def _sweep(ctx: Context, job: Job, table: torch.Tensor, nbytes: int) -> Swept:
    size = f"{nbytes >> 20} MiB"
    ctx.progress(f"all-reduce {size}")
    buf = torch.empty(nbytes // 4, dtype=torch.float32, device=ctx.torch_device)
    bad, first_bad = _checked(ctx, job, table, buf, f"the checked all-reduce of {size}")
    fill(buf, table, job.rank)
    _timed(ctx, job, buf, f"the timed all-reduces of {size}", windows=1)  # warm-up
    seconds = _timed(ctx, job, buf, f"the timed all-reduces of {size}", windows=job.windows)
    more, more_first = _checked(ctx, job, table, buf, f"the second checked all-reduce of {size}")
    checked = 2 * buf.numel()
    del buf
    if ctx.torch_device.type == "cuda":
        torch.cuda.empty_cache()
    first_bad = first_bad if first_bad >= 0 else more_first
    return Swept(nbytes=nbytes, seconds=seconds, checked=checked, bad=bad + more, first_bad=first_bad)


def _measure(ctx: Context, job: Job, command: Measure) -> Timed:
    groups = [distributed.new_group(ranks) for ranks in command.sets]
    mine = [(ranks, group) for ranks, group in zip(command.sets, groups, strict=True) if job.rank in ranks]
    if not mine:
        return Timed(ranks=(), seconds=())
    ranks, group = mine[0]
    buf = torch.zeros(command.nbytes // 4, dtype=torch.float32, device=ctx.torch_device)
    what = f"the all-reduces of ranks {list(ranks)}"
    _timed(ctx, job, buf, what, windows=1, group=group)
    seconds = _timed(ctx, job, buf, what, windows=job.windows, group=group)
    return Timed(ranks=ranks, seconds=seconds)


def _checked(ctx: Context, job: Job, table: torch.Tensor, buf: torch.Tensor, what: str) -> tuple[int, int]:
    fill(buf, table, job.rank)
    ctx.fault_input(buf)
    distributed.wait([distributed.all_reduce(buf)], what=what, limit_s=job.limit_s, on_wait=ctx.progress)
    ctx.fault_point(buf)
    return mismatches(buf, table, job.world)


def _timed(
    ctx: Context, job: Job, buf: torch.Tensor, what: str, *, windows: int, group: object = None
) -> tuple[float, ...]:
    seconds = []
    for _ in range(windows):
        took = distributed.timed_all_reduces(
            buf,
            job.iterations,
            what=what,
            limit_s=job.limit_s,
            on_wait=ctx.progress,
            group=group,
            before_each=ctx.fault_pace,
        )
        seconds.append(took / job.iterations)
        ctx.progress("all-reduce", seconds=took / job.iterations)
    return tuple(seconds)


# -- the pattern ----------------------------------------------------------------------


def _h(i: int) -> int:
    return ((i * MULTIPLIER) >> 7) & 63


def offset(rank: int) -> int:
    return rank % 17


def fill(buf: torch.Tensor, table: torch.Tensor, rank: int) -> None:
    """Rank `rank`'s input: element i is h(i mod PERIOD) + offset(rank)."""
    _each_block(buf, lambda block, start: block.copy_(_expected_block(table, start, block.numel()) + offset(rank)))


def expected_sum(table: torch.Tensor, start: int, count: int, world: int) -> torch.Tensor:
    """Elements start..start+count of the all-reduced buffer of `world` ranks."""
    return _expected_block(table, start, count) * world + sum(offset(r) for r in range(world))


def mismatches(buf: torch.Tensor, table: torch.Tensor, world: int) -> tuple[int, int]:
    """(wrong elements, index of the first) of an all-reduced buffer."""
    bad = 0
    first = -1

    def check(block: torch.Tensor, start: int) -> None:
        nonlocal bad, first
        wrong = block != expected_sum(table, start, block.numel(), world)
        count = int(wrong.sum())
        if count:
            bad += count
            if first < 0:
                first = start + int(wrong.nonzero()[0, 0])

    _each_block(buf, check)
    return bad, first


def _expected_block(table: torch.Tensor, start: int, count: int) -> torch.Tensor:
    phase = start % PERIOD
    reps = (phase + count + PERIOD - 1) // PERIOD
    return table.repeat(reps)[phase : phase + count]


def _each_block(buf: torch.Tensor, act: Callable[[torch.Tensor, int], object]) -> None:
    step = CHUNK - CHUNK % PERIOD  # blocks start on a period, so every block's table is the same
    for start in range(0, buf.numel(), step):
        act(buf[start : start + step], start)


# -- NVLS, from NCCL's own log ---------------------------------------------------------


def _nccl_log() -> Path:
    """Ask NCCL (before it starts) to log its set-up to a file of this process."""
    path = Path(tempfile.mkdtemp(prefix="gpu-burnin-nccl-")) / "nccl.log"
    os.environ.setdefault("NCCL_DEBUG", "INFO")
    os.environ.setdefault("NCCL_DEBUG_SUBSYS", "INIT,TUNING")
    os.environ.setdefault("NCCL_DEBUG_FILE", str(path))
    return Path(os.environ["NCCL_DEBUG_FILE"])


def nvls_use(log: Path | None) -> str:
    """yes, no or unknown: whether NCCL's log says it set up NVLink SHARP (NVLS) buffers."""
    if log is None:
        return "no"
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "unknown"
    lines = [line for line in text.splitlines() if "NVLS" in line]
    if any("NVLS multicast support is not available" in line or "NVLS disabled" in line for line in lines):
        return "no"
    if any("NVLS" in line and ("comm" in line or "enabled" in line or "channels" in line) for line in lines):
        return "yes"
    return "no" if text else "unknown"
