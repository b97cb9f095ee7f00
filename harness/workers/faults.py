"""Fault injection (`--gpu-inject`): prove that the pipeline fails closed.

A spec is `[GROUP.]KIND[@N][:DEVICE]`, such as `corrupt`, `matmul.hang:1`,
`nccl.hang@2:1`. The fault goes into one device's worker (device 0 unless named) in
the tests of GROUP (every group when omitted), at the first fault point that can
take it, or the Nth (`@N`: where a test's fault points differ, the all-reduce's
first is before its rank joins, its second inside the collectives). Every injection
is recorded as a finding in the result file; none can turn a run into a pass.

The parent side parses specs; the worker side (`fire`) applies them, once, at the
fault point a test's worker marks with `Context.fault_point` (the scaffolding in
harness/workers/devicetest.py). Every test therefore takes every fault without code of
its own: data faults act on the tensor the worker hands over, the others on the
process.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import time
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.groups import GROUPS

if TYPE_CHECKING:
    import torch

KINDS = {
    "corrupt": "flip one bit of one result: DATA_MISMATCH, fail",
    "skew": "perturb one input on one device so all its results differ from the others': DATA_MISMATCH, fail",
    "hang": "stop making progress (a spinning kernel on a GPU): HANG",
    "crash": "kill the worker with SIGSEGV: TEST_ERROR, incomplete",
    "error": "raise an exception in the worker, as a CUDA error does: TEST_ERROR, incomplete",
    "slow": "delay every timed unit of work on one device, as a slow GPU or link does: the all-reduce's "
    "pairwise search names it",
    "late": "make one rank of a collective arrive late at every timed window, as a busy host does: "
    "nothing to find, since no rank's figure may include another's arrival",
}
INPUT_KINDS = ("skew",)
"""Faults applied to an input before the work starts; the rest fire at the fault point."""
DATA_KINDS = ("corrupt",)
"""Faults that need the result at the fault point."""
PACE_KINDS = ("slow",)
"""Faults that act on every timed unit of work (`Context.fault_pace`), not at a fault point."""
SLOW_S = 0.2
"""What `slow` adds to each timed unit."""
ARRIVAL_KINDS = ("late",)
"""Faults that act on a rank's arrival at every timed window (`Context.fault_late`)."""
LATE_S = 0.5
"""How late `late` arrives: far more than a window of the CPU self-test, so that a figure that
included it would show."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fault:
    kind: str
    device: int = 0
    group: str = ""
    """The test group it applies to; empty for every group."""
    at: int = 1
    """Which of the worker's fault points that can take it fires it: the first, or the Nth."""

    def applies_to(self, group: str) -> bool:
        return self.group in ("", group)

    def __str__(self) -> str:
        prefix = f"{self.group}." if self.group else ""
        at = f"@{self.at}" if self.at != 1 else ""
        return f"{prefix}{self.kind}{at}:{self.device}"


def parse(spec: str) -> Fault:
    text, _, device_text = spec.strip().partition(":")
    text, sep, at_text = text.partition("@")
    group, _, kind = text.rpartition(".")
    if kind not in KINDS:
        raise ConfigError(f"unknown fault {kind!r} in {spec!r}; expected one of {sorted(KINDS)}", option="inject")
    if group and group not in GROUPS:
        raise ConfigError(f"unknown test group {group!r} in {spec!r}; expected one of {list(GROUPS)}", option="inject")
    at = _number(at_text if sep else "1", f"the N of @N in {spec!r}", least=1)
    device = _number(device_text or "0", f"device in {spec!r}", least=0)
    return Fault(kind=kind, device=device, group=group, at=at)


def _number(text: str, what: str, *, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number", option="inject") from None
    if value < least:
        raise ConfigError(f"{what} must be at least {least}", option="inject")
    return value


# -- the worker side: these run inside a device worker -----------------------------


def fire(kind: str, data: torch.Tensor | None, device: torch.device) -> None:
    """Apply a fault at a fault point (`data` is the result there, needed by DATA_KINDS)."""
    if kind == "corrupt":
        if data is None:
            raise ValueError("a corrupt fault needs the result at the fault point")
        _flip_lowest_bit(data)
    elif kind == "error":
        raise RuntimeError("injected fault: CUDA error: an illegal memory access was encountered")
    elif kind == "crash":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "hang":
        _hang(device)
    else:
        raise ValueError(f"{kind!r} is not a fault that fires at a fault point")


def perturb(data: torch.Tensor) -> None:
    """The `skew` fault: change the first elements of an input, so every result built on it differs."""
    flat = data.view(-1)[:4]
    if data.is_floating_point():
        flat.neg_()
    else:
        flat.bitwise_xor_(1)


def _flip_lowest_bit(data: torch.Tensor) -> None:
    import torch

    raw = data.view(-1).view(torch.uint8)  # little-endian: byte 0 holds element 0's lowest bit
    raw[0] = raw[0] ^ 1


def _hang(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        # A kernel that spins for ever, as a hung GPU does.
        torch.cuda._sleep(1 << 62)  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
        torch.cuda.synchronize(device)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like a process stuck in the driver
    while True:
        time.sleep(60)
