"""GPU-to-GPU bandwidth, worker side: copy-engine copies from this GPU to each peer, timed and checked.

Each worker sees every GPU of the node and works from its own. It first asks CUDA
which peers it can reach directly (`Ready`), then waits: the parent gives one pair
at a time a `Copy` turn, so a figure is the pair's own link and not its share of a
switch. One way is this GPU to the peer; both ways runs that and the peer back to
this GPU at once, from this worker, each way on `STREAMS` streams so that the pair's
links are full. Every copy is checked on the GPU it landed on (gputests/work/copies.py),
the warm-up's that enables peer access too, and the buffers of a pair are freed before
the next pair's.
The parent side is gputests/work/nvlink_run.py.

On the CPU stand-in the "GPUs" are buffers in host memory: the orchestration, the
matrix, the timing and the checks run; the figure is memcpy's.
"""

from __future__ import annotations

import dataclasses
import gc

import torch

from gputests.work import copies
from harness.devices import Device
from harness.workers import Message
from harness.workers.devicetest import Context

ONE_WAY = "nvlink.p2p.gbps"
BOTH_WAYS = "nvlink.p2p.bidir.gbps"
MIN_WINDOWS = 3
WINDOW_S = 0.05
SEED = 20261201
STREAMS = 4
"""Streams per direction: one copy engine's copy does not fill a pair's NVLink links (then a lost link
or two would not show in the figure); four, on as many copy engines, do."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    nbytes: int
    """Bytes per copy."""
    seconds: float
    """Timed seconds per pair and mode, after the warm-up."""
    warmup_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ready(Message):
    reachable: tuple[str, ...]
    """The peers (UUIDs) this GPU can reach directly (CUDA peer access)."""
    unreachable: tuple[str, ...]


class Command(Message):
    """What the parent tells a waiting worker: `Copy` or `Stop`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Copy(Command):
    """The parent's go for one pair: this GPU to `peer`, or both ways at once."""

    peer: str
    both_ways: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Copied(Message):
    peer: str
    both_ways: bool
    windows: tuple[float, ...]
    """GB/s of each timed window (both directions' bytes together, both ways)."""
    checked: int
    bad: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stop(Command):
    """No more pairs for this worker."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairDone(Message):
    """The end of a `Copy` turn, whether its copies were measured or its phase failed."""


def can_reach(source: torch.device, destination: torch.device) -> bool:
    """Whether copies from one device to the other go directly (always, for the CPU stand-in)."""
    if source.type != "cuda":
        return True
    return bool(torch.cuda.can_device_access_peer(source.index, destination.index))


def copy_pair(context: Context, peer: Device, both_ways: bool, job: Job, *, fault: bool) -> Copied:
    """Timed, checked windows from this GPU to `peer` (and back at once, `both_ways`), each way on
    `STREAMS` streams; the warm-up and calibration copies (peer access enabled) are checked, not timed."""
    own, other = context.torch_device, context.torch_device_of(peer)
    lanes = [copies.Lane(own, other, job.nbytes, seed=SEED, streams=STREAMS)]
    if both_ways:
        lanes.append(copies.Lane(other, own, job.nbytes, seed=SEED + 10, streams=STREAMS))
    label = f"{'both ways' if both_ways else 'to'} {peer.label}"
    measured = copies.measure(
        lanes,
        seconds=job.seconds,
        warmup_s=job.warmup_s,
        window_s=WINDOW_S,
        min_windows=MIN_WINDOWS,
        fault=context.fault_point if fault else None,
        progress=lambda found, bad: context.progress(label, gbps=found.gbps, bad=float(bad)),
    )
    del lanes
    _release(own)
    return Copied(
        peer=peer.uuid, both_ways=both_ways, windows=measured.gbps, checked=measured.checked, bad=measured.bad
    )


def worker(context: Context, job: Job) -> None:
    """Runs in one worker per GPU: say which peers it reaches, then copy in the turns it is given."""
    own = context.torch_device
    peers = [d for d in context.peers if d != context.device]
    reach = {d.uuid: can_reach(own, context.torch_device_of(d)) for d in peers}
    reachable = tuple(uuid for uuid, ok in reach.items() if ok)
    context.send(Ready(reachable=reachable, unreachable=tuple(uuid for uuid in reach if uuid not in reachable)))
    by_uuid = {d.uuid: d for d in peers}
    first = True
    while True:
        command = context.recv(Command, waiting="waiting for its turn")
        if not isinstance(command, Copy):
            break
        peer = by_uuid[command.peer]
        name = BOTH_WAYS if command.both_ways else ONE_WAY
        with context.phase(f"{'both ways' if command.both_ways else 'to'} {peer.label}", metric=name):
            context.send(copy_pair(context, peer, command.both_ways, job, fault=first))
        first = False
        context.send(PairDone())


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
