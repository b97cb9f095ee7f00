"""NCCL's own log, for whether it ran an all-reduce on NVLink SHARP (NVLS).

Each rank of the all-reduce has NCCL log at INFO to a file of its own (`log_to`, before NCCL
starts), in a directory the parent makes and removes. After each sweep the rank reads which
algorithm NCCL chose for each all-reduce (`nvls_use`): the only line that says whether NVLS
was used, not merely possible.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ALGO = re.compile(r"\bAllReduce: \d+ Bytes -> Algo (\w+)", re.IGNORECASE)
"""NCCL's TUNING line for each all-reduce, on its communicator's rank 0 (enqueue.cc): `AllReduce:
2097152 Bytes -> Algo NVLS proto SIMPLE channel{Lo..Hi}={0..15}` (2.29 and 2.30 on 8x H100 and
H200 nodes), `... Algo NVLS proto Simple ...` in other releases, and numbers (`Algo 4 proto 2
time 25.2`) in old ones."""
_NVLS_NUMBERS = ("4", "5")
"""NCCL_ALGO_NVLS and NCCL_ALGO_NVLS_TREE in the numbered form."""


def log_to(path: Path) -> None:
    """NCCL's set-up and its choice of algorithm for every collective, into this rank's file
    (before NCCL starts). Set, not defaulted: the parent reads it and removes it after."""
    os.environ["NCCL_DEBUG"] = "INFO"
    os.environ["NCCL_DEBUG_SUBSYS"] = "INIT,TUNING"
    os.environ["NCCL_DEBUG_FILE"] = str(path)


def read(log: Path) -> str | None:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return None


def nvls_use(text: str | None) -> str:
    """yes, no or unknown: whether NCCL's log says it ran an all-reduce on NVLink SHARP (NVLS).
    NCCL logs only that multicast is available when it starts (`NVLS multicast support is available
    on dev 0 (NVLS_NCHANNELS 16)` in 2.27 and 2.28), and sets NVLS buffers up even where it never
    uses them; only the algorithm it chose for each all-reduce says whether it did."""
    if not text:
        return "unknown"
    algorithms = {name.upper() for name in _ALGO.findall(text)}
    if not algorithms:
        return "unknown"
    used = any(name.startswith("NVLS") or name in _NVLS_NUMBERS for name in algorithms)
    return "yes" if used else "no"
