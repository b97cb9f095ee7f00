"""NCCL all-reduce: one process per GPU, a size sweep from 8 MiB to 8 GiB, every window's result checked.

Bus bandwidth as nccl-tests defines it (busbw = algbw x 2(n-1)/n), the slowest rank's
time, one figure for the team on every GPU, judged against the baseline at the large
sizes; whether NCCL ran it on NVLink SHARP (`nccl.nvls`, from its own log); NCCL's
version goes into the result file. A rank that hangs is `HANG`; ranks that never all
meet are incomplete (check-config); a wrong reduced value is `DATA_MISMATCH` on that
rank's GPU. Under MPI (mpiexec) each node also times the job's ranks across nodes
(`nccl.allreduce.multinode.*`), and a slow job's pairwise search names the slow node.
With one GPU there is nothing to measure: incomplete where the baseline requires these figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gputests.work import nccl_run

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.nccl


def test_nccl_allreduce(burnin: Recorder) -> None:
    burnin.record(nccl_run.run(burnin.scope))
