"""The synthetic fleet's GPU models: every figure's true median and spread (bench/fleet.py draws from them).

Medians are of the order a healthy card of each model measures through the suite; they only
need to clear the packaged floors by a margin (bench/fleet.py checks they do).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.groups import direction_of
from harness.records import Direction


@dataclasses.dataclass(frozen=True, kw_only=True)
class Truth:
    """One metric's true distribution on one model."""

    metric: str
    unit: str
    direction: Direction
    median: float
    spread: float
    """GPU to GPU within a node, as a fraction of the median (the normal's sigma)."""
    node_spread: float
    """Node to node, likewise."""

    @property
    def test(self) -> str:
        group = self.metric.split(".", 1)[0]
        return f"gputests/test_{group}.py::test_{group}"

    @property
    def fleet_spread(self) -> float:
        return float(np.hypot(self.spread, self.node_spread))


H100 = {
    "matmul.bf16.tflops": 700.0,
    "matmul.fp16.tflops": 670.0,
    "matmul.tf32.tflops": 370.0,
    "matmul.fp32.tflops": 51.0,
    "matmul.fp8.tflops": 1300.0,
    "memory.coverage": 0.887,
    "memory.verify.gbps": 2950.0,
    "memory.zeros.verify.gbps": 2950.0,
    "memory.ones.verify.gbps": 2950.0,
    "memory.checkerboard.verify.gbps": 2950.0,
    "memory.walking_ones.verify.gbps": 2950.0,
    "memory.moving_inversions.verify.gbps": 2950.0,
    "memory.random.verify.gbps": 2950.0,
    "memory.address.verify.gbps": 2950.0,
    "pcie.h2d.gbps": 53.0,
    "pcie.d2h.gbps": 54.0,
    "pcie.bidir.gbps": 95.0,
    "nvlink.p2p.gbps": 360.0,
    "nvlink.p2p.bidir.gbps": 690.0,
    "nccl.allreduce.8mib.busbw": 120.0,
    "nccl.allreduce.64mib.busbw": 250.0,
    "nccl.allreduce.512mib.busbw": 380.0,
    "nccl.allreduce.4gib.busbw": 460.0,
    "nccl.allreduce.8gib.busbw": 470.0,
    "nccl.allreduce.multinode.8mib.busbw": 27.5,
    "nccl.allreduce.multinode.64mib.busbw": 99.7,
    "nccl.allreduce.multinode.512mib.busbw": 263.7,
    "nccl.allreduce.multinode.4gib.busbw": 330.6,
    "nccl.allreduce.multinode.8gib.busbw": 338.8,
}
A100 = {
    "matmul.bf16.tflops": 255.0,
    "matmul.fp16.tflops": 245.0,
    "matmul.tf32.tflops": 125.0,
    "matmul.fp32.tflops": 18.8,
    "memory.coverage": 0.887,
    "memory.verify.gbps": 1790.0,
    "memory.zeros.verify.gbps": 1790.0,
    "memory.ones.verify.gbps": 1790.0,
    "memory.checkerboard.verify.gbps": 1790.0,
    "memory.walking_ones.verify.gbps": 1790.0,
    "memory.moving_inversions.verify.gbps": 1790.0,
    "memory.random.verify.gbps": 1790.0,
    "memory.address.verify.gbps": 1790.0,
    "pcie.h2d.gbps": 25.0,
    "pcie.d2h.gbps": 26.0,
    "pcie.bidir.gbps": 45.0,
    "nvlink.p2p.gbps": 230.0,
    "nvlink.p2p.bidir.gbps": 450.0,
    "nccl.allreduce.8mib.busbw": 90.0,
    "nccl.allreduce.64mib.busbw": 200.0,
    "nccl.allreduce.512mib.busbw": 222.0,
    "nccl.allreduce.4gib.busbw": 234.0,
    "nccl.allreduce.8gib.busbw": 235.0,
}
UNITS = {"tflops": "TFLOP/s", "gbps": "GB/s", "busbw": "GB/s", "coverage": "fraction"}


def _model(medians: dict[str, float]) -> tuple[Truth, ...]:
    """About 27 figures per GPU: matmul dtypes, memory (each pattern's verify), PCIe, NVLink (two peers each), NCCL.
    Matmul: 0.6% GPU to GPU, 0.4% node to node; memory coverage hardly varies; the rest 1%."""
    truths = []
    for metric, median in medians.items():
        spread, node_spread = (0.006, 0.004) if metric.startswith("matmul.") else (0.01, 0.005)
        if metric == "memory.coverage":
            spread, node_spread = 0.001, 0.0005
        unit = UNITS[metric.rsplit(".", 1)[1]]
        truths.append(
            Truth(
                metric=metric,
                unit=unit,
                direction=_direction(metric),
                median=median,
                spread=spread,
                node_spread=node_spread,
            )
        )
    truths.append(
        Truth(metric="memory.bad_words", unit="words", direction=Direction.LOWER, median=0.0, spread=0, node_spread=0)
    )
    return tuple(truths)


def _direction(metric: str) -> Direction:
    """The metric's direction, as its group declares it (harness.groups)."""
    found = direction_of(metric)
    if found is None:
        raise ValueError(f"{metric}: no test group measures it (harness.groups)")
    return found


MODELS: dict[str, tuple[Truth, ...]] = {
    "NVIDIA H100 80GB HBM3": _model(H100),
    "NVIDIA A100-SXM4-80GB": _model(A100),
}
"""GPU name (as the driver reports it, so the packaged baselines cover it) -> its metrics."""
SM_COUNT = {"NVIDIA H100 80GB HBM3": (132, "9.0"), "NVIDIA A100-SXM4-80GB": (108, "8.0")}
PEER_METRICS = ("nvlink.p2p.gbps", "nvlink.p2p.bidir.gbps")
"""Measured per pair: to the next and the previous GPU of the node (a ring), so two per GPU each."""
