"""DCGM's own diagnostics (`dcgmi diag -r LEVEL -j`), as findings. Selected only when
--gpu-dcgm-level (gpu-burnin run --dcgm-level) is given: a node without DCGM is not incomplete."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from harness.workers.devicetest import Outcome

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.dcgm


def test_dcgm(burnin: Recorder, request: pytest.FixtureRequest) -> None:
    level = request.config.getoption("gpu_dcgm_level")
    burnin.record(Outcome(findings=burnin.dcgm(level)))
