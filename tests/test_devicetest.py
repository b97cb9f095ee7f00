"""The device-test scaffolding, through a toy test of another group (tests/device_targets.py)."""

import dataclasses
import time

import pytest

from harness.profiles import quick
from harness.records import Code, Severity
from harness.workers import Progress
from harness.workers.devicetest import Limits, Scope
from harness.workers.faults import parse
from tests import device_targets
from tests.device_targets import Job
from tests.helpers import cpus

PROFILE = quick().for_cpu()


def scope(devices, faults=None, **changes) -> Scope:
    profile = PROFILE.with_overrides(**changes)
    return Scope(devices=tuple(devices), profile=profile, test="t::memory", group="memory", faults=faults or {})


def test_figures_come_back_per_device_as_medians_of_their_windows(cpu):
    seen = []
    devices = cpus(2, cpu)
    the_scope = dataclasses.replace(scope(devices), on_progress=lambda d, p: seen.append((d.uuid, p)))
    outcome = device_targets.run(the_scope, Job(phases=("fill",)))
    assert outcome.findings == []
    assert sorted(m.gpu for m in outcome.measurements) == ["CPU-0", "CPU-1"]
    for m in outcome.measurements:
        assert (m.metric, m.unit, m.samples, m.test) == ("memory.fill.gbps", "GB/s", 3, "t::memory")
        assert m.low <= m.value <= m.high
    windows = [p for _, p in seen if isinstance(p, Progress) and p.phase.startswith("fill window")]
    assert len(windows) == 6 and all(p.figures["gbps"] > 0 for p in windows)


def test_a_phase_that_raises_or_is_unsupported_ends_alone(cpu):
    outcome = device_targets.run(scope([cpu]), Job(phases=("unsupported", "broken", "fill")))
    by_code = {f.code: f for f in outcome.findings}
    assert set(by_code) == {Code.TEST_SKIPPED, Code.TEST_ERROR}
    skipped, error = by_code[Code.TEST_SKIPPED], by_code[Code.TEST_ERROR]
    assert skipped.severity is Severity.INFO and skipped.metric == "memory.unsupported.gbps"
    assert skipped.message == "CPU 0 (CPU-test): unsupported not measured: this toy device has no such mode"
    assert error.severity is Severity.INCOMPLETE and error.message.endswith(
        "memory broken raised: ValueError: a CUDA error, say"
    )
    assert "Traceback" in error.details["traceback"]
    assert [m.metric for m in outcome.measurements] == ["memory.fill.gbps"]


def test_a_flipped_bit_reaches_the_test_through_its_fault_point(cpu):
    outcome = device_targets.run(scope(cpus(2, cpu), {1: parse("corrupt:1")}), Job(phases=("fill",)))
    assert [(f.code, f.gpu, f.message) for f in outcome.findings] == [
        (Code.DATA_MISMATCH, "CPU-1", "CPU 1 (CPU-1): 1 bad words in fill")
    ]


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [("crash", Code.TEST_ERROR, "signal SIGSEGV"), ("error", Code.TEST_ERROR, "injected fault: CUDA error")],
)
def test_process_faults_work_on_any_test_group(cpu, kind, code, words):
    outcome = device_targets.run(scope(cpus(2, cpu), {0: parse(f"memory.{kind}")}), Job(phases=("fill",)))
    [found] = outcome.findings
    assert (found.code, found.severity, found.gpu) == (code, Severity.INCOMPLETE, "CPU-0")
    assert words in found.message
    assert {m.gpu for m in outcome.measurements} == {"CPU-1"}


@pytest.mark.slow
def test_a_hang_is_killed_within_the_hang_timeout(cpu):
    began = time.monotonic()
    outcome = device_targets.run(scope([cpu], {0: parse("hang")}, hang_timeout_s=1.0), Job(phases=("fill",)))
    assert time.monotonic() - began < 20
    [found] = outcome.findings
    assert found.code is Code.HANG and "memory worker no progress for 1 s" in found.message
    assert found.details["phase"] == "fill start"


def test_a_fault_the_worker_has_no_point_for_is_reported_not_ignored(cpu):
    outcome = device_targets.run(scope([cpu], {0: parse("corrupt")}), Job(phases=("unsupported",)))
    assert [(f.code, f.severity) for f in outcome.findings] == [
        (Code.TEST_SKIPPED, Severity.INFO),
        (Code.FAULT_NOT_APPLIED, Severity.WARNING),
    ]
    assert "fault corrupt:0 was not applied" in outcome.findings[1].message


def test_an_input_fault_fires_at_the_input(cpu):
    outcome = device_targets.run(scope([cpu], {0: parse("skew")}), Job(phases=("fill",)))
    # The toy refills its buffer, so a perturbed input does no harm; had it not fired, FAULT_NOT_APPLIED would say so.
    assert outcome.findings == []


def test_limits_allow_twice_the_work_and_two_stalls():
    limits = Limits.for_work(quick(), busy_s=100.0)
    assert (limits.startup_s, limits.stall_s) == (180.0, 60.0)
    assert limits.limit_s == 180.0 + 200.0 + 120.0
