"""Training burn: every GPU trains the same small transformer, and the GPUs vote step by step.

Each GPU trains a decoder-only transformer (RMSNorm, causal attention through
scaled_dot_product_attention, SwiGLU, AdamW, gradient clipping) from the same bits
on the same batches with deterministic kernels, and fingerprints every step: the
loss, the gradient norm and a checksum of the updated parameters per layer. GPUs of
one model must agree bitwise at every step (docs/determinism.md); one that does not
is DATA_MISMATCH, named with the step and the layer. The loss must fall
(TRAIN_DIVERGED). Tokens/s and model FLOP utilisation are judged against the
baseline by the plugin, like the matmul test's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gputests.work import train_run

if TYPE_CHECKING:
    from gputests.plugin import Recorder

pytestmark = pytest.mark.train


def test_train(burnin: Recorder) -> None:
    burnin.record(train_run.run(burnin.scope))
