"""DCGM's own diagnostics (`dcgmi diag -r LEVEL -j`), as findings. Selected only when
--gpu-dcgm-level (gpu-burnin run --dcgm-level) is given: a node without DCGM is not incomplete."""

import pytest

from harness.workers.devicetest import Outcome

pytestmark = pytest.mark.dcgm


def test_dcgm(burnin, request):
    level = request.config.getoption("gpu_dcgm_level")
    burnin.record(Outcome(findings=burnin.dcgm(level)))
