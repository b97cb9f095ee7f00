"""PCIe bandwidth, worker side: copies between pinned host memory and the device, timed and checked.

Each worker first puts its thread, and so the pinned host memory it allocates, on its
GPU's NUMA node where the host reports one (placed elsewhere, a reading can be a
quarter of the true figure), allocates its buffers, says `Ready`, and waits its
turn: the parent measures one GPU at a time, so that GPUs behind one PCIe switch do
not share it during a measurement. In its turn it measures host to device, device to
host, and both at once, each as timed windows of back-to-back copies
(gputests/work/copies.py: every copy is checked, on the GPU beside the copies, or on
the host between bursts of copies into host memory). The parent side is
gputests/work/pcie_run.py.

On the CPU stand-in, "host" and "device" are two buffers in host memory: the
orchestration, timing and checks run, the figure is memcpy's.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from gputests.work import copies
from harness.devices import numa_placement
from harness.workers import Message
from harness.workers.devicetest import Context

DIRECTIONS = ("h2d", "d2h", "bidir")
"""Host to device, device to host, and both at once (their bytes added up)."""
MIN_WINDOWS = 3
WINDOW_S = 0.1
"""The aim for one timed window; its copies are counted from warm, untimed ones."""
SEED = 20261130


def metric_name(direction: str) -> str:
    return f"pcie.{direction}.gbps"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    nbytes: int
    """Bytes per copy."""
    seconds: float
    """Timed seconds per direction, after its warm-up."""
    warmup_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ready(Message):
    """Buffers allocated; the worker waits for its `Turn`."""

    placement: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Turn(Message):
    """The parent's go: measure now, the other GPUs are idle."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measured(Message):
    direction: str
    windows: tuple[float, ...]
    """GB/s of each timed window."""
    copies: int
    checked: int
    bad: int
    """Checked copies whose destination did not match their source."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnDone(Message):
    """Every direction measured (or failed, as a phase)."""


def place(context: Context) -> str:
    """Run this worker on the CPUs of its GPU's NUMA node, where the host says which; in words."""
    if context.device.kind != "cuda":
        return "the CPU stand-in: not placed"
    placement = numa_placement(context.device.pci_bus_id)
    allowed = os.sched_getaffinity(0)
    chosen = placement.cpus & allowed
    if placement.node is None or not chosen:
        return placement.describe() if placement.node is None else f"{placement.describe()}: none of its CPUs allowed"
    os.sched_setaffinity(0, chosen)
    return placement.describe()


def lanes(device: torch.device, nbytes: int) -> dict[str, list[copies.Lane]]:
    """The copies of each direction: host is pinned host memory where the device is a GPU."""
    host = torch.device("cpu")
    h2d = copies.Lane(host, device, nbytes, seed=SEED)
    d2h = copies.Lane(device, host, nbytes, seed=SEED + 10)
    return {"h2d": [h2d], "d2h": [d2h], "bidir": [h2d, d2h]}


def measure(
    direction: str, lanes: list[copies.Lane], job: Job, context: Context | None = None, *, fault_point: bool = False
) -> Measured:
    """Timed windows of one direction for `job.seconds`, after the sizing and `job.warmup_s` untimed
    (checked all the same)."""
    measured = copies.measure(
        lanes,
        seconds=job.seconds,
        warmup_s=job.warmup_s,
        window_s=WINDOW_S,
        min_windows=MIN_WINDOWS,
        fault=context.fault_point if context is not None and fault_point else None,
        progress=lambda found, bad: context.progress(direction, gbps=found.gbps, bad=float(bad)) if context else None,
    )
    return Measured(
        direction=direction,
        windows=measured.gbps,
        copies=measured.copies,
        checked=measured.checked,
        bad=measured.bad,
    )


def worker(context: Context, job: Job) -> None:
    """Runs in one worker per device: place, allocate, wait for the turn, measure every direction."""
    placement = place(context)
    by_direction = lanes(context.torch_device, job.nbytes)
    context.fault_input(by_direction["h2d"][0].sources[0])  # `skew`: a source that no longer matches its sum
    context.send(Ready(placement=placement))
    context.recv(Turn, waiting="waiting for its turn")
    for direction in DIRECTIONS:
        with context.phase(direction, metric=metric_name(direction)):
            context.send(measure(direction, by_direction[direction], job, context, fault_point=direction == "h2d"))
    context.send(TurnDone())
