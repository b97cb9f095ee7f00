"""The device-test scaffolding, through a toy test of another group (tests/device_targets.py)."""

import dataclasses
import itertools
import time

import pytest

from harness.errors import ConfigError
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
    outcome = device_targets.run(scope([cpu], {0: parse("hang")}, hang_timeout_s=3.0), Job(phases=("fill",)))
    assert time.monotonic() - began < 20
    [found] = outcome.findings
    assert found.code is Code.HANG and "memory worker no progress for 3 s" in found.message
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


def test_turns_run_one_device_at_a_time_while_the_others_wait_alive(cpu):
    # Each turn holds its device 4 s; the stall limit is 3 s: a waiting worker lives only by its keepalives.
    answers, outcome = device_targets.run_turns(
        scope(cpus(3, cpu), hang_timeout_s=3.0), [device_targets.TurnJob(hold_s=4.0)] * 3
    )
    assert outcome.findings == [], [f.message for f in outcome.findings]
    took = [(uuid, m) for uuid, m in answers if isinstance(m, device_targets.Took)]
    assert [uuid for uuid, _ in took] == ["CPU-0", "CPU-1", "CPU-2"]
    assert all(later.started >= earlier.ended for (_, earlier), (_, later) in itertools.pairwise(took))
    assert [type(m).__name__ for _, m in answers] == ["Took", "Finished"] * 3


def test_a_device_that_hangs_in_its_turn_is_hung_and_the_next_still_gets_its_turn(cpu):
    answers, outcome = device_targets.run_turns(
        scope(cpus(2, cpu), {0: parse("hang")}, hang_timeout_s=3.0), [device_targets.TurnJob(hold_s=0.5)] * 2
    )
    assert [(f.code, f.severity, f.gpu) for f in outcome.findings] == [(Code.HANG, Severity.FAIL, "CPU-0")]
    assert [uuid for uuid, m in answers if isinstance(m, device_targets.Took)] == ["CPU-1"]


def test_a_message_out_of_turn_is_named_as_a_bug(cpu):
    jobs = [device_targets.TurnJob(hold_s=3.0), device_targets.TurnJob(hold_s=0.2, out_of_turn=True)]
    with pytest.raises(RuntimeError, match="CPU 1 sent Took while CPU 0 had the turn"):
        device_targets.run_turns(scope(cpus(2, cpu)), jobs)


def test_a_fault_can_name_which_of_its_fault_points_fires_it():
    fault = parse("nccl.hang@2:1")
    assert (fault.group, fault.kind, fault.at, fault.device) == ("nccl", "hang", 2, 1)
    assert str(fault) == "nccl.hang@2:1" and str(parse("corrupt")) == "corrupt:0"
    for bad, says in (("hang@0", "at least 1"), ("hang@x", "must be a number"), ("hang:-1", "at least 0")):
        with pytest.raises(ConfigError, match=says):
            parse(bad)
