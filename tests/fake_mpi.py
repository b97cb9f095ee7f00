"""An MPI world of several hosts without an MPI launcher: this process is MPI rank 0, and the
other processes answer what a test says they would.

Run as a script, it is `python -m pytest ARGS` in such a world (PMI_RANK set, so the session
joins "MPI"), for the command line's own handling of a job across hosts.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from harness import distributed


class FakeMpi(distributed.Mpi):
    """MPI rank 0 of a job on `hosts` (this process's host first). `others(value)` is what the
    other processes share when this one shares `value` (their host names are known already)."""

    def __init__(self, hosts: Sequence[str], others: Callable[[Any], list[Any]] | None = None):
        self.place = distributed.Place(rank=0, size=len(hosts), local_rank=0, local_size=1, host=hosts[0])
        self.hosts = list(hosts)
        self.others = others or (lambda value: [])
        self.meeting_host = ""
        self._tag = 100

    def bcast(self, value: Any, *, limit_s: float) -> Any:
        return value

    def gather(self, value: Any, *, limit_s: float, missing: Any = distributed.Stuck) -> list[Any] | None:
        return [value, *self._rest(value)]

    def allgather(self, value: Any, *, limit_s: float) -> list[Any]:
        return [value, *self._rest(value)]

    def _rest(self, value: Any) -> list[Any]:
        if value == self.place.host:
            return self.hosts[1:]
        return self.others(value)


def main(argv: list[str]) -> int:
    """pytest in a world of this host and `node-b`, where MPI rank 0 (this process) is alone."""
    import pytest

    os.environ["PMI_RANK"] = "0"
    distributed.Mpi = lambda: FakeMpi([socket.gethostname(), "node-b"])  # type: ignore[assignment,misc]
    return int(pytest.main(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
