"""Progress lines during a burn: one per device every few seconds, so a long soak never looks hung.

    GPU 0   matmul  bf16 window 240        722.4 TFLOP/s, bad 0  (35 s)

The figures are whatever the worker's progress message carries (harness.workers.Progress).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.devices import Device
from harness.workers import Progress

EVERY_S = 5.0
UNITS = {"tflops": "TFLOP/s", "gbps": "GB/s"}


class ProgressLines:
    """Turns a test's progress messages into lines, at most one per device every `every_s`."""

    def __init__(
        self, write: Callable[[str], None], *, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic
    ):
        self._write = write
        self._every_s = every_s
        self._clock = clock

    def for_test(self, group: str) -> Callable[[Device, Progress], None]:
        began = self._clock()
        last: dict[str, float] = {}

        def on_progress(device: Device, progress: Progress) -> None:
            now = self._clock()
            if now - last.get(device.uuid, began) < self._every_s:
                return
            last[device.uuid] = now
            self._write(line(device, group, progress, now - began))

        return on_progress


def line(device: Device, group: str, progress: Progress, elapsed_s: float) -> str:
    figures = ", ".join(_figure(name, value) for name, value in progress.figures.items())
    return f"{device.label:<7} {group:<7} {progress.phase:<22} {figures}  ({elapsed_s:.0f} s)".replace("   (", "  (")


def _figure(name: str, value: float) -> str:
    if name in UNITS:
        return f"{value:.4g} {UNITS[name]}"
    return f"{name} {value:.4g}"
