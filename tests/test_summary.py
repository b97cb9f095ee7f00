"""The terminal summary's table: each figure against its limit, in the direction that limit points."""

from pathlib import Path

from gputests import summary
from harness import compare
from harness.baselines import Baseline, MetricSpec, Provenance
from harness.records import Direction, Measurement
from tests.helpers import gpus


def spec(name: str, unit: str, direction: Direction, limit: float) -> MetricSpec:
    return MetricSpec(
        name=name,
        unit=unit,
        direction=direction,
        limit=limit,
        node_tolerance=None,
        required=True,
        provenance=Provenance(kind="estimate", source="test"),
    )


BASELINE = Baseline(
    path=Path("t.toml"),
    model="Test GPU",
    device="cuda",
    names=("NVIDIA H100 80GB HBM3",),
    metrics={
        "memory.bad_words": spec("memory.bad_words", "words", Direction.LOWER, 0.0),
        "memory.verify.gbps": spec("memory.verify.gbps", "GB/s", Direction.HIGHER, 2000.0),
    },
)


def rows(values: dict[str, float]) -> dict[str, list[str]]:
    (device,) = gpus(1)
    units = {"memory.bad_words": ("words", Direction.LOWER), "memory.verify.gbps": ("GB/s", Direction.HIGHER)}
    measurements = [
        Measurement(metric=m, gpu=device.uuid, value=v, unit=units[m][0], direction=units[m][1])
        for m, v in values.items()
    ]
    lines = summary.table(compare.assess(measurements, [device], {device.uuid: BASELINE}))
    assert lines[0].split() == ["device", "metric", "value", "limit", "vs", "best", "status"]
    return {line.split()[2]: line.split()[3:] for line in lines[2:]}


def test_a_count_over_its_ceiling_reads_high_against_its_ceiling_not_low_against_a_floor():
    found = rows({"memory.bad_words": 3.0, "memory.verify.gbps": 1000.0})
    assert found["memory.bad_words"] == ["3", "words", "<=", "0", "words", "1.000", "HIGH"]
    assert found["memory.verify.gbps"] == ["1000", "GB/s", ">=", "2000", "GB/s", "1.000", "LOW"]


def test_figures_within_their_limits_are_ok_either_way():
    found = rows({"memory.bad_words": 0.0, "memory.verify.gbps": 2500.0})
    assert found["memory.bad_words"][-1] == found["memory.verify.gbps"][-1] == "ok"
