"""The GPU-to-GPU test on the CPU stand-in: the matrix, checked copies, access, one GPU; pairs judged."""

import subprocess
import sys
from pathlib import Path

import pytest

from gputests import summary
from gputests.work import nvlink, nvlink_run
from harness import compare
from harness.baselines import Baseline, MetricSpec, Provenance
from harness.groups import NvlinkSection
from harness.profiles import quick
from harness.records import Code, Direction, Measurement, Severity
from harness.workers.devicetest import Scope
from harness.workers.faults import parse
from tests.helpers import cpus

PROFILE = quick().for_cpu().with_overrides(duration_s=0.3).with_section(NvlinkSection(mib=1))


def run(devices, faults=None, baselines=None, profile=PROFILE):
    scope = Scope(
        devices=tuple(devices),
        profile=profile,
        test="t::nvlink",
        group="nvlink",
        faults=faults or {},
        baselines=baselines or {},
    )
    return nvlink_run.run(scope)


def baseline(required: bool = True, floor: float = 1e-6, tolerance: float | None = 0.1) -> Baseline:
    specs = {
        name: MetricSpec(
            name=name,
            unit="GB/s",
            direction=Direction.HIGHER,
            limit=floor,
            node_tolerance=tolerance,
            required=required,
            provenance=Provenance(kind="estimate", source="test"),
        )
        for name in nvlink_run.METRICS
    }
    return Baseline(path=Path("t.toml"), model="Test CPU", device="cpu", names=("Test CPU",), metrics=specs)


def test_the_schedule_is_every_ordered_pair_then_every_unordered_pair_both_ways(cpu):
    a, b, c = cpus(3, cpu)
    schedule = nvlink_run.pairs((a, b, c))
    assert [(s.uuid, p.uuid, both) for s, p, both in schedule] == [
        ("CPU-0", "CPU-1", False),
        ("CPU-0", "CPU-2", False),
        ("CPU-1", "CPU-0", False),
        ("CPU-1", "CPU-2", False),
        ("CPU-2", "CPU-0", False),
        ("CPU-2", "CPU-1", False),
        ("CPU-0", "CPU-1", True),
        ("CPU-0", "CPU-2", True),
        ("CPU-1", "CPU-2", True),
    ]


@pytest.mark.slow
def test_three_devices_fill_the_matrix_one_way_and_both_ways(cpu):
    devices = cpus(3, cpu)
    outcome = run(devices)
    assert [f for f in outcome.findings if f.severity in (Severity.FAIL, Severity.INCOMPLETE)] == []
    one_way = {(m.gpu, m.peer) for m in outcome.measurements if m.metric == nvlink.ONE_WAY}
    both = {(m.gpu, m.peer) for m in outcome.measurements if m.metric == nvlink.BOTH_WAYS}
    every_ordered = {(a.uuid, b.uuid) for a in devices for b in devices if a != b}
    assert one_way == every_ordered
    assert both == every_ordered  # a pair's both-ways figure is in both GPUs' rows
    assert all(m.value > 0 and m.samples >= nvlink.MIN_WINDOWS for m in outcome.measurements)


@pytest.mark.slow
def test_a_bad_copy_is_a_mismatch_of_that_pair(cpu):
    outcome = run(cpus(2, cpu), {1: parse("nvlink.corrupt:1")})
    mismatch = [f for f in outcome.findings if f.code is Code.DATA_MISMATCH]
    assert [(f.gpu, f.details["peer"], f.severity) for f in mismatch] == [("CPU-1", "CPU-0", Severity.FAIL)]


@pytest.mark.slow
def test_a_hung_copy_is_its_gpus_hang_and_the_other_pairs_go_on(cpu):
    profile = PROFILE.with_overrides(hang_timeout_s=4.0)
    outcome = run(cpus(3, cpu), {2: parse("nvlink.hang:2")}, profile=profile)
    hangs = [f for f in outcome.findings if f.code is Code.HANG]
    assert [(f.gpu, f.severity) for f in hangs] == [("CPU-2", Severity.FAIL)]
    measured = {(m.gpu, m.peer) for m in outcome.measurements if m.metric == nvlink.ONE_WAY}
    assert ("CPU-0", "CPU-1") in measured and ("CPU-1", "CPU-0") in measured


@pytest.mark.parametrize(("required", "severity"), [(True, Severity.INCOMPLETE), (False, Severity.INFO)])
def test_one_gpu_has_nothing_to_test(cpu, required, severity):
    (device,) = cpus(1, cpu)
    outcome = run([device], baselines={device.uuid: baseline(required=required)})
    assert outcome.measurements == []
    (found,) = outcome.findings
    assert (found.code, found.severity) == (Code.NOTHING_TO_TEST, severity)
    assert "no pair" in found.message
    assert ("its baseline requires" in found.message) is required


@pytest.mark.parametrize(("required", "severity"), [(True, Severity.FAIL), (False, Severity.WARNING)])
def test_a_peer_out_of_reach_is_a_failure_where_the_model_is_built_for_nvlink(cpu, required, severity):
    devices = cpus(2, cpu)
    scope = Scope(
        devices=devices,
        profile=PROFILE,
        test="t",
        group="nvlink",
        baselines={d.uuid: baseline(required=required) for d in devices},
    )
    ready = nvlink.Ready(reachable=(), unreachable=("CPU-1",))
    (found,) = nvlink_run.access_findings(scope, devices[0], ready)
    assert (found.code, found.severity, found.details["peer"]) == (Code.NO_PEER_ACCESS, severity, "CPU-1")


def _pair(gpu: str, peer: str, value: float) -> Measurement:
    return Measurement(
        metric=nvlink.ONE_WAY, gpu=gpu, peer=peer, value=value, unit="GB/s", direction=Direction.HIGHER, test="t"
    )


def test_a_slow_pair_trails_the_median_pair_not_the_fastest(cpu):
    devices = cpus(3, cpu)
    figures = {("CPU-0", "CPU-1"): 100.0, ("CPU-1", "CPU-0"): 100.0, ("CPU-0", "CPU-2"): 130.0}
    figures |= {("CPU-2", "CPU-0"): 100.0, ("CPU-1", "CPU-2"): 100.0, ("CPU-2", "CPU-1"): 60.0}
    measurements = [_pair(a, b, v) for (a, b), v in figures.items()]
    assessments = compare.assess(measurements, devices, {d.uuid: baseline() for d in devices})
    behind = [(a.measurement.gpu, a.measurement.peer) for a in assessments if a.status == compare.Standing.BEHIND_NODE]
    assert behind == [("CPU-2", "CPU-1")]  # 130 is one fast path, not the reference: the median, 100
    (found,) = compare.findings(assessments)
    assert found.details["peer"] == "CPU-1" and "median pair" in found.message and "to CPU 1" in found.message
    lines = summary.matrices(assessments)
    assert any("60<" in line for line in lines)
    row = next(line for line in lines if line.startswith("CPU 2"))
    assert row.split()[2:] == ["100", "60<", "-"]  # to CPU 0, to CPU 1, itself


@pytest.mark.slow
def test_nvlink_on_a_machine_without_a_pair_is_incomplete_and_says_why_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "--cpu-devices", "1", "-m", "nvlink"]
        + ["--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("INCOMPLETE")]
    assert len(lines) == 1 and "NOTHING_TO_TEST" in lines[0] and "no pair" in lines[0]
