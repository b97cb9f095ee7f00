import dataclasses
from pathlib import Path

import pytest

from harness import compare
from harness.baselines import Baseline, MetricSpec, Provenance
from harness.records import Code, Direction, Measurement, Severity
from tests.helpers import gpus

SOURCE = Provenance(kind="estimate", source="test")


def spec(
    name: str,
    limit: float,
    *,
    direction: Direction = Direction.HIGHER,
    tolerance: float | None = 0.1,
    required: bool = True,
) -> MetricSpec:
    return MetricSpec(
        name=name,
        unit="u",
        direction=direction,
        limit=limit,
        node_tolerance=tolerance,
        required=required,
        provenance=SOURCE,
    )


BASE = Baseline(
    path=Path("h100.toml"),
    model="H100",
    device="cuda",
    names=("NVIDIA H100 80GB HBM3",),
    metrics={
        "matmul.bf16.tflops": spec("matmul.bf16.tflops", 640.0),
        "matmul.fp8.tflops": spec("matmul.fp8.tflops", 1000.0),
        "lat.p99.us": spec("lat.p99.us", 50.0, direction=Direction.LOWER),
        "matmul.extra.tflops": spec("matmul.extra.tflops", 1.0, required=False),
    },
)


def m(
    gpu: str, value: float, metric: str = "matmul.bf16.tflops", direction: Direction = Direction.HIGHER
) -> Measurement:
    return Measurement(metric=metric, gpu=gpu, value=value, unit="u", direction=direction, test="t")


def statuses(measurements, devices, baseline_for):
    return [(a.measurement.gpu, a.status) for a in compare.assess(measurements, devices, baseline_for)]


def test_floor_and_node_comparisons_each_catch_what_the_other_misses():
    devices = gpus(4)
    cover = {d.uuid: BASE for d in devices}
    values = [790.0, 785.0, 600.0, 700.0]  # GPU 2 under the floor; GPU 3 above it but 11% behind GPU 0
    found = statuses([m(d.uuid, v) for d, v in zip(devices, values, strict=True)], devices, cover)
    assert found == [
        (devices[0].uuid, "ok"),
        (devices[1].uuid, "ok"),
        (devices[2].uuid, "LOW"),
        (devices[3].uuid, "BEHIND"),
    ]


def test_a_uniformly_slow_node_fails_on_the_floor_alone():
    devices = gpus(2)
    cover = {d.uuid: BASE for d in devices}
    assessed = compare.assess([m(d.uuid, 500.0) for d in devices], devices, cover)
    assert [a.status for a in assessed] == ["LOW", "LOW"]
    findings = compare.findings(assessed)
    assert [f.code for f in findings] == [Code.LOW_THROUGHPUT, Code.LOW_THROUGHPUT]
    assert all(f.severity is Severity.FAIL for f in findings)
    assert "below the floor of 640 in h100.toml" in findings[0].message
    assert findings[0].message.startswith("GPU 0 (GPU-00000000): matmul.bf16.tflops = 500")


def test_ratio_is_against_the_best_gpu_of_the_same_model_only():
    h100 = gpus(1)
    a100 = [dataclasses.replace(gpus(1, name="NVIDIA A100-SXM4-80GB")[0], index=1, uuid="GPU-a100", sm_count=108)]
    devices = h100 + a100
    cover = {h100[0].uuid: BASE, a100[0].uuid: None}
    assessed = compare.assess([m(h100[0].uuid, 700.0), m(a100[0].uuid, 280.0)], devices, cover)
    assert [a.ratio for a in assessed] == [1.0, 1.0]
    assert [a.status for a in assessed] == ["ok", "no baseline"]


def test_lower_is_better_uses_the_ceiling_and_the_node_minimum():
    devices = gpus(3)
    cover = {d.uuid: BASE for d in devices}
    values = [20.0, 21.0, 60.0]
    assessed = compare.assess(
        [m(d.uuid, v, "lat.p99.us", Direction.LOWER) for d, v in zip(devices, values, strict=True)], devices, cover
    )
    assert [a.status for a in assessed] == ["ok", "ok", "LOW"]
    assert assessed[1].ratio == pytest.approx(20.0 / 21.0)
    finding = compare.findings(assessed)[0]
    assert finding.code is Code.OVER_LIMIT and "above the ceiling of 50" in finding.message


def test_a_metric_the_baseline_does_not_list_is_recorded_unchecked_with_a_warning():
    devices = gpus(1)
    assessed = compare.assess([m(devices[0].uuid, 5.0, "matmul.int8.tops")], devices, {devices[0].uuid: BASE})
    assert assessed[0].status == "unchecked"
    [warning] = compare.findings(assessed)
    assert (warning.code, warning.severity) == (Code.NOT_IN_BASELINE, Severity.WARNING)
    assert "is not judged: h100.toml has no limit for it" in warning.message


def test_a_baseline_with_nothing_for_the_tests_group_judges_nothing_and_blocks():
    devices = gpus(1)
    [blocked] = compare.missing(devices, {devices[0].uuid: BASE}, [], group="nccl", test="t")
    assert (blocked.code, blocked.severity) == (Code.NO_BASELINE, Severity.INCOMPLETE)
    assert "h100.toml has no nccl metric" in blocked.message


def test_missing_required_metrics_of_the_test_group_block_the_verdict():
    devices = gpus(2)
    cover = {d.uuid: BASE for d in devices}
    measured = [m(devices[0].uuid, 700.0), m(devices[0].uuid, 1200.0, "matmul.fp8.tflops"), m(devices[1].uuid, 700.0)]
    found = compare.missing(devices, cover, measured, group="matmul", test="t")
    assert [(f.gpu, f.metric, f.code, f.severity) for f in found] == [
        (devices[1].uuid, "matmul.fp8.tflops", Code.MISSING_MEASUREMENT, Severity.INCOMPLETE)
    ]
    # lat.* belongs to another group and matmul.extra is not required: neither is missing here.
    assert compare.missing(devices, cover, measured, group="matmul", test="t", excused=[devices[1].uuid]) == []


def test_a_lone_gpu_with_nothing_to_test_is_not_held_for_a_group_its_1_gpu_baseline_leaves_out():
    """A 1-GPU H100 box: its baseline (h100-sxm-80gb-1gpu.toml) has no nvlink metric, and the nvlink test
    had nothing to test (NOTHING_TO_TEST, info). That is as it should be, not a figure nobody could judge."""
    from harness import baselines

    [device] = gpus(1)
    one = baselines.load_dir(baselines.default_dir()).for_device("cuda", device.name, 1)
    lone = compare.missing([device], {device.uuid: one}, [], group="nvlink", test="t", nothing_to_test={device.uuid})
    assert lone == []
    measured_nothing = compare.missing([device], {device.uuid: one}, [], group="nvlink", test="t")
    assert [f.code for f in measured_nothing] == [Code.NO_BASELINE]  # a test that ran and could not be judged
