"""Matmul burn: every GPU multiplies at once, in every dtype it supports.

TFLOP/s per GPU and dtype is the median of timed windows after warm-up; every
product is compared bitwise with the GPU's first product, and first products are
compared across GPUs of the same model (docs/determinism.md says why they must be
equal). The plugin judges the figures against the baseline when the test returns.
"""

import pytest

from gputests.work import matmul_run

pytestmark = pytest.mark.matmul


def test_matmul(burnin):
    burnin.record(matmul_run.run(burnin.scope))
