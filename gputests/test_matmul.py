"""Matmul burn: every GPU multiplies at once, in every dtype it supports.

TFLOP/s per GPU and dtype is the median of timed windows after warm-up; every
product is compared bitwise with the GPU's first product, and first products are
compared across GPUs of the same model (docs/determinism.md says why they must be
equal). The plugin judges the figures against the baseline when the test returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gputests.work import matmul_run

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.matmul


def test_matmul(burnin: Recorder) -> None:
    burnin.record(matmul_run.run(burnin.scope))
