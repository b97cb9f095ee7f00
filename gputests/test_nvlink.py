"""GPU-to-GPU bandwidth: the N x N matrix of copy-engine copies, one way and both ways at once.

One pair at a time, every copy checked on the GPU it landed on. Each pair is judged
against the baseline's floor and against the node's median pair; a pair that cannot
reach each other directly is a finding, and so are NVLink links down and error
counters that rose during the test (the health rules). A node with one GPU has
nothing to test: incomplete where its baseline requires these figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gputests.work import nvlink_run

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.nvlink


def test_nvlink(burnin: Recorder) -> None:
    burnin.record(nvlink_run.run(burnin.scope))
