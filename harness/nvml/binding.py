"""Which NVML to talk to: the driver's, through nvidia-ml-py, or a simulation. The only module
that imports pynvml.

Everything else takes the binding this returns and calls NVML's functions on it
(`nv.nvmlDeviceGetCount()`), catching `nv.NVMLError`: the real module and the
simulation (harness/nvml/sim.py) offer the same names, errors included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REAL = "real"
SIMULATED = "sim:"


class Unavailable(Exception):
    """No NVML at all: nvidia-ml-py is not installed."""


def load(spec: str = REAL) -> Any:
    """`real`, or `sim:FILE` for a scenario file."""
    if spec.startswith(SIMULATED):
        from harness.nvml.sim import Simulated

        return Simulated.from_file(Path(spec[len(SIMULATED) :]))
    try:
        import pynvml
    except ImportError as err:
        raise Unavailable(f"nvidia-ml-py is not installed ({err})") from err
    return pynvml
