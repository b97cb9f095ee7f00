"""Which NVML to talk to: the driver's, through nvidia-ml-py, or a simulation. The only module
that imports pynvml.

Everything else takes the binding this returns and calls NVML's functions on it
(`nv.nvmlDeviceGetCount()`), catching `nv.NVMLError`: the real module and the
simulation (harness/nvml/sim.py) offer the same names, errors included. What they
offer is declared once, in harness/nvml/backend.py.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.nvml.backend import Backend

REAL = "real"
SIMULATED = "sim:"


class Unavailable(Exception):
    """No NVML at all: nvidia-ml-py is not installed."""


class Driver:
    """nvidia-ml-py as a `Backend`: every NVML name is the module's own; a scenario's clock and test
    groups mean nothing to a driver, and the clock events' call is found under either of its names."""

    def __init__(self, module: ModuleType):
        self.module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def follow_clock(self, now_s: float | None) -> None:
        pass

    def follow_tests(self, *, finished: Collection[str] | None = None, running: Collection[str] | None = None) -> None:
        pass

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:  # noqa: N802 - NVML's name
        """Renamed from nvmlDeviceGetCurrentClocksThrottleReasons with driver 535 (and nvidia-ml-py 12.535)."""
        call = getattr(self.module, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if call is None:
            call = self.module.nvmlDeviceGetCurrentClocksThrottleReasons
        return int(call(handle))


def load(spec: str = REAL) -> Backend[Any]:
    """`real`, or `sim:FILE` for a scenario file."""
    if spec.startswith(SIMULATED):
        from harness.nvml.sim import Simulated

        return Simulated.from_file(Path(spec[len(SIMULATED) :]))
    try:
        import pynvml
    except ImportError as err:
        raise Unavailable(f"nvidia-ml-py is not installed ({err})") from err
    return Driver(pynvml)
