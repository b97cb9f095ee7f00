"""Helpers shared by gpu-burnin's own tests (fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness import devices
from harness.devices import Device
from harness.workers import Message, Progress, faults
from harness.workers.devicetest import Context

REPO = Path(__file__).resolve().parent.parent
ON_GPU_BOX = devices.nvidia_driver_present()
"""An NVIDIA driver is installed here: tests that assume one or its absence pick by this."""


def gpus(count: int, name: str = "NVIDIA H100 80GB HBM3") -> list[Device]:
    return [
        Device(index=i, kind="cuda", name=name, uuid=f"GPU-{i:08d}", sm_count=132, compute_capability="9.0")
        for i in range(count)
    ]


def cpus(count: int, base: Device) -> tuple[Device, ...]:
    """Several workers on the CPU, standing in for several GPUs of one model."""
    return tuple(dataclasses.replace(base, index=i, uuid=f"CPU-{i}", sm_count=1) for i in range(count))


def documents(directory: Path) -> list[dict]:
    """Every result file in `directory`, as raw JSON, oldest name first."""
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def only_result(directory: Path) -> dict:
    found = documents(directory)
    assert len(found) == 1, [p.name for p in directory.iterdir()]
    return found[0]


class RecordingChannel:
    """Stands in for a worker's channel, to call worker-side code in this process."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def progress(self, phase: str, **figures: float) -> None:
        self.send(Progress(phase=phase, figures=figures))

    def recv(self, kind: type) -> Message:
        raise AssertionError(f"nothing to receive here (asked for {kind.__name__})")


def local_context(fault: str = "", device: Device | None = None) -> tuple[Context, RecordingChannel]:
    """A worker Context in this process, for the measuring code's own tests, and what it sent."""
    device = device or Device(index=0, kind="cpu", name="Test CPU", uuid="CPU-test", sm_count=2)
    channel = RecordingChannel()
    return Context(channel, device, faults.parse(fault) if fault else None), channel  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
