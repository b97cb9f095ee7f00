"""Memory pattern burn: every GPU takes at least 90% of its free memory and verifies it at once.

Zeros, ones, checkerboard, walking ones, moving inversions, seeded random and
address-in-address are written and verified on the device, for the test's duration.
Coverage, each pattern's verify bandwidth and the whole round's, and bad words per GPU
are judged against the baseline when the test returns; every bad word is described in
a DATA_MISMATCH finding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gputests.work import memory_run

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.memory


def test_memory(burnin: Recorder) -> None:
    burnin.record(memory_run.run(burnin.scope))
