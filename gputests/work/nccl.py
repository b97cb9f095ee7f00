"""NCCL all-reduce, worker side: one rank per GPU, a size sweep, every window's result checked exactly.

Each worker joins the others as one rank of a torch.distributed group (NCCL between
GPUs, gloo on the CPU stand-in; harness/distributed.py owns both), then does what the
parent says, all ranks at once:

- `Sweep`: for one size, timed windows of back-to-back all-reduces in place
  (nccl-tests' -n), one warm-up window first; within each node's ranks (the node's
  figure) or across every rank of the job (`across`, when it spans nodes).
- `Measure`: timed windows within subgroups of ranks (the pairwise search); the
  ranks outside them only make the subgroups, as every rank must, and free them after.

Every window starts from a fresh buffer and its last result is checked. Rank p of a
group of n holds g(i, p) - g(i, p + 1 mod n) at element i, where g(i, p) is a
63-valued hash of i shifted by p: the sum over the group is exactly 0, so the first
all-reduce of a window leaves zeros, every later one sums zeros, and the window's
result must be all zero bits. Every value and partial sum is a small integer, exact
in fp32 whatever the order of the sums; a lost, doubled, misplaced or corrupted
contribution anywhere in the window leaves a non-zero element (a sum of a non-zero
and zeros stays non-zero through the window's later all-reduces).

A window's figure is the slowest rank's (harness/distributed.py `slowest`): one team
figure per size, the same on every rank. A join that does not complete within its
limit ends with `NotJoined`, a collective with `Stuck`, one that fails because a peer
died with `PeerLost`: all are the other ranks' problem, which the parent attributes
(gputests/work/nccl_run.py). The fault points: the first is before the rank joins
(`nccl.hang` never joins), then one after each window (`nccl.hang@2` hangs among the
collectives; `nccl.corrupt@4` changes this rank's result of the fourth window); a
`late` rank arrives late at every window, a `slow` one delays every all-reduce.

On a GPU, NCCL logs to a file per rank in the directory the parent made (and removes);
after each sweep the worker reads it for the algorithm NCCL chose (gputests/work/nccl_log.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from gputests.work import nccl_log
from harness import distributed
from harness.workers import Message
from harness.workers.devicetest import Context

PERIOD = 65521
"""The pattern repeats with this period (a prime): a misplaced block of elements shows."""
MULTIPLIER = 2654435761
STRIDE = 7919
"""Rank p's half-pattern is the table shifted by p x STRIDE (a prime below PERIOD)."""
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
    """How long one collective step (a window, a meeting) may wait for the others."""
    nodes: tuple[tuple[int, ...], ...] = ()
    """Each node's ranks, in node order, when the job spans several nodes; else empty."""
    log_dir: str = ""
    """Where NCCL logs, one file per rank (the parent removes it)."""


# -- parent to worker -------------------------------------------------------------


class Command(Message):
    """What the parent tells the ranks, all of them at once: `Sweep`, `Measure` or `Stop`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sweep(Command):
    nbytes: int
    """Bytes per rank."""
    across: bool = False
    """All the job's ranks at once; else each node's ranks, every node at once."""


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checked(Answer):
    """Every window's last result, checked."""

    checked: int = 0
    """Elements checked."""
    bad: int = 0
    first_bad: int = -1
    """The index of the first wrong element, or -1."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Swept(Checked):
    nbytes: int
    across: bool = False
    seconds: tuple[float, ...]
    """Seconds per all-reduce of the slowest rank, per timed window: the same on every rank."""
    nvls: str = "unknown"
    """Whether NCCL chose NVLink SHARP (NVLS) for an all-reduce so far, from this rank's log: yes,
    no, or unknown (gloo, or a rank that is not its communicator's rank 0: NCCL logs its choices there)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timed(Checked):
    ranks: tuple[int, ...]
    """The set this rank timed in; empty for a rank in none."""
    seconds: tuple[float, ...]
    """Seconds per all-reduce of the set's slowest rank, per window."""


class RankEnd(Answer):
    """This rank cannot go on, through no fault of its own that it can see."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotJoined(RankEnd):
    """The ranks never all met within the join's limit: the network, the address, or a rank or
    node that never came, not a GPU's fault."""

    what: str
    waited_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stuck(RankEnd):
    what: str
    waited_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeerLost(RankEnd):
    error: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Ranks:
    """This rank's node's subgroup (None: the whole world, on one node) and who is in it."""

    node: object
    node_ranks: tuple[int, ...]
    world_ranks: tuple[int, ...]


def worker(ctx: Context, job: Job) -> None:
    device = ctx.torch_device
    backend = distributed.backend_for(device)
    log = Path(job.log_dir) / f"rank-{job.rank}.log" if job.log_dir else None
    if backend == "nccl" and log is not None:
        nccl_log.log_to(log)
    ctx.progress("joining")
    ctx.fault_point()  # a rank that never joins
    try:
        distributed.join(
            job.rendezvous,
            rank=job.rank,
            world=job.world,
            backend=backend,
            device=device,
            limit_s=job.join_limit_s,
            collective_limit_s=job.limit_s,
            on_wait=ctx.progress,
        )
    except distributed.Stuck as err:
        ctx.send(NotJoined(what=err.what, waited_s=err.waited_s))
        return
    facts = distributed.backend_facts(backend)
    ctx.send(Joined(backend=backend, version=facts["version"]))
    table = torch.tensor([_h(i) for i in range(PERIOD)], dtype=torch.float32, device=device)
    try:
        ranks = _ranks(job)
        while True:
            command = ctx.recv(Command, waiting="waiting for the next all-reduce")
            if isinstance(command, Stop):
                break
            if isinstance(command, Sweep):
                ctx.send(_sweep(ctx, job, table, command, ranks, log if backend == "nccl" else None))
            elif isinstance(command, Measure):
                ctx.send(_measure(ctx, job, table, command))
    except distributed.Stuck as err:
        ctx.send(Stuck(what=err.what, waited_s=err.waited_s))
        return  # a collective may still be pending: leave without waiting for it
    except distributed.PeerLost as err:
        ctx.send(PeerLost(error=str(err)))
        return
    distributed.leave()


def _ranks(job: Job) -> _Ranks:
    """Every node's subgroup, made by every rank in node order; this rank's own kept (leaving the
    world frees them all)."""
    everyone = tuple(range(job.world))
    if len(job.nodes) < 2:
        return _Ranks(node=None, node_ranks=everyone, world_ranks=everyone)
    made = [(ranks, distributed.new_group(ranks)) for ranks in job.nodes]
    node_ranks, node = next((r, g) for r, g in made if job.rank in r)
    return _Ranks(node=node, node_ranks=tuple(node_ranks), world_ranks=everyone)


def _sweep(ctx: Context, job: Job, table: torch.Tensor, command: Sweep, ranks: _Ranks, log: Path | None) -> Swept:
    nbytes = command.nbytes
    where = "all ranks" if command.across else "this node's ranks"
    what = f"the all-reduces of {nbytes >> 20} MiB among {where}"
    ctx.progress(f"all-reduce {nbytes >> 20} MiB")
    group, members = (None, ranks.world_ranks) if command.across else (ranks.node, ranks.node_ranks)
    buf = torch.empty(nbytes // 4, dtype=torch.float32, device=ctx.torch_device)
    tally = _Tally()
    windows = _windows(ctx, job, table, buf, what, group=group, members=members, tally=tally)
    seconds = distributed.slowest(
        windows, device=ctx.torch_device, what=what, limit_s=job.limit_s, on_wait=ctx.progress, group=group
    )
    del buf
    if ctx.torch_device.type == "cuda":
        torch.cuda.empty_cache()
    nvls = nccl_log.nvls_use(nccl_log.read(log)) if log is not None else "unknown"
    return Swept(nbytes=nbytes, across=command.across, seconds=seconds, nvls=nvls, **tally.fields())


def _measure(ctx: Context, job: Job, table: torch.Tensor, command: Measure) -> Timed:
    groups = [distributed.new_group(ranks) for ranks in command.sets]
    mine = [(ranks, group) for ranks, group in zip(command.sets, groups, strict=True) if job.rank in ranks]
    answer = Timed(ranks=(), seconds=())
    if mine:
        ranks, group = mine[0]
        buf = torch.empty(command.nbytes // 4, dtype=torch.float32, device=ctx.torch_device)
        what = f"the all-reduces of ranks {list(ranks)}"
        tally = _Tally()
        windows = _windows(ctx, job, table, buf, what, group=group, members=ranks, tally=tally)
        seconds = distributed.slowest(
            windows, device=ctx.torch_device, what=what, limit_s=job.limit_s, on_wait=ctx.progress, group=group
        )
        answer = Timed(ranks=tuple(ranks), seconds=seconds, **tally.fields())
        del buf
    distributed.free_groups(groups, device=ctx.torch_device, limit_s=job.limit_s, on_wait=ctx.progress)
    return answer


@dataclasses.dataclass
class _Tally:
    checked: int = 0
    bad: int = 0
    first_bad: int = -1

    def add(self, buf: torch.Tensor) -> None:
        bad, first = mismatches(buf)
        self.checked += buf.numel()
        self.bad += bad
        if self.first_bad < 0:
            self.first_bad = first

    def fields(self) -> dict[str, int]:
        return {"checked": self.checked, "bad": self.bad, "first_bad": self.first_bad}


def _windows(
    ctx: Context,
    job: Job,
    table: torch.Tensor,
    buf: torch.Tensor,
    what: str,
    *,
    group: object,
    members: Sequence[int],
    tally: _Tally,
) -> list[float]:
    """Seconds per all-reduce of this rank, per timed window (the warm-up window's dropped); every
    window's input fresh and its result checked."""
    position, size = list(members).index(job.rank), len(members)
    seconds = []
    for _ in range(job.windows + 1):
        fill(buf, table, position, size)
        ctx.fault_input(buf)
        took = distributed.timed_all_reduces(
            buf,
            job.iterations,
            what=what,
            limit_s=job.limit_s,
            on_wait=ctx.progress,
            group=group,
            before_start=ctx.fault_late,
            before_each=ctx.fault_pace,
        )
        ctx.fault_point(buf)
        tally.add(buf)
        seconds.append(took / job.iterations)
        ctx.progress("all-reduce", seconds=took / job.iterations)
    return seconds[1:]


# -- the pattern ----------------------------------------------------------------------


def _h(i: int) -> int:
    return ((i * MULTIPLIER) >> 7) & 63


def fill(buf: torch.Tensor, table: torch.Tensor, position: int, size: int) -> None:
    """The input of the rank at `position` of a group of `size`: g(i, p) - g(i, p + 1 mod size),
    with g(i, p) = h((i + p STRIDE) mod PERIOD). Over the group the sum is exactly 0."""
    following = (position + 1) % size

    def write(block: torch.Tensor, start: int) -> None:
        block.copy_(_shifted(table, start, position, block.numel()))
        block.sub_(_shifted(table, start, following, block.numel()))

    _each_block(buf, write)


def mismatches(buf: torch.Tensor) -> tuple[int, int]:
    """(wrong elements, index of the first) of a window's result, which must be all zero bits
    (a -0.0 or a NaN is wrong too)."""
    bad = 0
    first = -1

    def check(block: torch.Tensor, start: int) -> None:
        nonlocal bad, first
        wrong = block.view(torch.int32) != 0
        count = int(wrong.sum())
        if count:
            bad += count
            if first < 0:
                first = start + int(wrong.nonzero()[0, 0])

    _each_block(buf, check)
    return bad, first


def _shifted(table: torch.Tensor, start: int, position: int, count: int) -> torch.Tensor:
    phase = (start + position * STRIDE) % PERIOD
    reps = (phase + count + PERIOD - 1) // PERIOD
    return table.repeat(reps)[phase : phase + count]


def _each_block(buf: torch.Tensor, act: Callable[[torch.Tensor, int], object]) -> None:
    step = CHUNK - CHUNK % PERIOD  # blocks start on a period, so every block's table is the same
    for start in range(0, buf.numel(), step):
        act(buf[start : start + step], start)
