"""PCIe bandwidth: host to device, device to host and both at once, one GPU at a time.

Pinned host memory on the GPU's NUMA node, large copies timed with CUDA events and
checked against their source. Each figure is judged against the baseline's floor and
against the node's best GPU; a low one is told the link's generation and width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gputests.work import pcie_run

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.pcie


def test_pcie(burnin: Recorder) -> None:
    burnin.record(pcie_run.run(burnin.scope))
