"""NVML health: ECC, row remapping, page retirement, throttling, PCIe and NVLink, judged by the
rules in harness/health.py against each GPU model's baseline. Snapshots before and after every
stress test, and Xid events for the whole run, are judged too, whether or not this test runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from harness.workers.devicetest import Outcome

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.health


def test_health(burnin: Recorder) -> None:
    burnin.record(Outcome(findings=burnin.health()))
