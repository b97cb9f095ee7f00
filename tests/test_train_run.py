"""The training run across several workers, on the CPU standing in for GPUs."""

import dataclasses
import time

import pytest

from gputests.work import train_run
from harness.groups import TrainSection
from harness.profiles import quick
from harness.records import Code, Severity
from harness.workers.devicetest import Scope
from harness.workers.faults import Fault
from tests.helpers import cpus, only_result

PROFILE = quick().for_cpu().with_overrides(duration_s=0.2)


def run(devices, faults=None, profile=PROFILE):
    scope = Scope(devices=tuple(devices), profile=profile, test="t::train", group="train", faults=faults or {})
    return train_run.run(scope)


def fault(kind: str, device: int, at: int = 1) -> dict[int, Fault]:
    return {device: Fault(kind=kind, device=device, group="train", at=at)}


def failing(outcome):
    return [f for f in outcome.findings if f.severity is not Severity.INFO]


def test_a_clean_run_finds_nothing_and_every_device_agrees(cpu):
    devices = cpus(2, cpu)
    outcome = run(devices)
    assert failing(outcome) == []
    assert {(m.gpu, m.metric) for m in outcome.measurements} == {(d.uuid, train_run.TOKENS) for d in devices}
    assert all(m.value > 0 and m.samples >= 3 and m.unit == "tokens/s" for m in outcome.measurements)
    info = [f for f in outcome.findings if f.code is Code.TRAIN_FINGERPRINTS]
    assert [f.gpu for f in info] == ["CPU-0", "CPU-1"]
    assert info[0].details["digest"] == info[1].details["digest"] and info[0].details["check"] == "vote"
    assert len(info[0].details["fingerprints"]) == train_run.FIRST_STEPS
    assert info[0].details["groups"] == ["embed", "layers.0", "layers.1", "head"]
    assert "each step compared bitwise with the other devices of its model" in info[0].message


def test_a_corrupted_device_of_two_fails_alone_with_the_step_and_the_layer(cpu):
    outcome = run(cpus(2, cpu), fault("corrupt", 1, at=3))
    [found] = failing(outcome)
    assert (found.code, found.severity, found.gpu) == (Code.DATA_MISMATCH, Severity.FAIL, "CPU-1")
    assert (found.details["step"], found.details["group"], found.details["check"]) == (3, "layers.1", "replay")
    assert "at step 3" in found.message and "parameters (first in layers.1)" in found.message


def test_of_three_devices_the_majority_names_the_corrupted_one(cpu):
    outcome = run(cpus(3, cpu), fault("corrupt", 2, at=2))
    [found] = failing(outcome)
    assert (found.code, found.gpu, found.details["step"], found.details["group"]) == (
        Code.DATA_MISMATCH,
        "CPU-2",
        2,
        "layers.1",
    )
    assert found.details["majority"] is True and found.details["voters"] == 3


def test_two_devices_that_disagree_consistently_are_both_inconclusive(cpu):
    # `skew` makes device 1 consistently wrong: its replay repeats its first run, so nothing breaks the tie.
    outcome = run(cpus(2, cpu), fault("skew", 1))
    found = failing(outcome)
    assert [(f.code, f.severity, f.gpu) for f in found] == [
        (Code.INCONCLUSIVE, Severity.INCOMPLETE, "CPU-0"),
        (Code.INCONCLUSIVE, Severity.INCOMPLETE, "CPU-1"),
    ]
    assert all(f.details["step"] == 1 and f.details["tie"] == "tied" for f in found)


def test_a_lone_device_compares_each_step_with_its_second_run_and_says_so(cpu):
    outcome = run(cpus(1, cpu), fault("corrupt", 0, at=4))
    [found] = failing(outcome)
    assert (found.code, found.details["step"], found.details["check"]) == (Code.DATA_MISMATCH, 4, "rerun")
    [info] = [f for f in outcome.findings if f.code is Code.TRAIN_FINGERPRINTS]
    assert info.details["check"] == "rerun" and "catches intermittent faults only" in info.message


def test_a_learning_rate_that_diverges_is_train_diverged(cpu):
    absurd = dataclasses.replace(PROFILE.section(TrainSection), lr=1e4)
    found = failing(run(cpus(2, cpu), profile=PROFILE.with_section(absurd)))
    assert [(f.code, f.severity, f.gpu) for f in found] == [
        (Code.TRAIN_DIVERGED, Severity.FAIL, "CPU-0"),
        (Code.TRAIN_DIVERGED, Severity.FAIL, "CPU-1"),
    ]
    assert "the loss is nan at step" in found[0].message or "did not fall" in found[0].message


@pytest.mark.slow
def test_a_hung_device_is_hang_and_its_peer_is_left_unchecked(cpu):
    began = time.monotonic()
    outcome = run(cpus(2, cpu), fault("hang", 1), PROFILE.with_overrides(hang_timeout_s=6.0))
    assert time.monotonic() - began < 45
    found = [(f.code, f.severity, f.gpu) for f in failing(outcome)]
    assert found == [(Code.HANG, Severity.FAIL, "CPU-1"), (Code.INCONCLUSIVE, Severity.INCOMPLETE, "CPU-0")]
    assert {m.gpu for m in outcome.measurements} == {"CPU-0"}


@pytest.mark.slow
def test_a_slow_device_trains_fewer_tokens_a_second(cpu):
    outcome = run(cpus(2, cpu), fault("slow", 0))
    assert failing(outcome) == []  # slower, but its steps agree with its peer's as far as it got
    rate = {m.gpu: m.value for m in outcome.measurements}
    assert rate["CPU-0"] * 5 < rate["CPU-1"]


def test_a_worker_error_is_incomplete_named_and_its_peer_is_left_unchecked(cpu):
    found = failing(run(cpus(2, cpu), fault("error", 1)))
    assert [(f.code, f.severity, f.gpu) for f in found] == [
        (Code.TEST_ERROR, Severity.INCOMPLETE, "CPU-1"),
        (Code.INCONCLUSIVE, Severity.INCOMPLETE, "CPU-0"),
    ]
    assert "train train raised: RuntimeError: injected fault" in found[0].message
    assert "Traceback" in found[0].details["traceback"] and found[0].metric == train_run.TOKENS
    assert "could be compared" in found[1].message


SUITE = (
    "-p",
    "no:cacheprovider",
    "--pyargs",
    "gputests",
    "--gpu-device",
    "cpu",
    "--gpu-duration",
    "0.4",
    "-m",
    "train",
)


@pytest.mark.slow
def test_the_self_test_of_train_passes_and_keeps_the_first_fingerprints(pytester, tmp_path):
    result = pytester.runpytest(*SUITE, "--gpu-results", str(tmp_path))
    assert result.ret == 0
    result.stdout.fnmatch_lines(["CPU 0*train.tokens_per_s*tokens/s*>= 1 tokens/s*ok", "gpu-burnin verdict: PASS*"])
    doc = only_result(tmp_path)
    prints = [f for f in doc["findings"] if f["code"] == "TRAIN_FINGERPRINTS"]
    assert len(prints) == 2 and prints[0]["details"]["digest"] == prints[1]["details"]["digest"]
    assert doc["profile"]["train"]["layers"] == 2 and doc["profile"]["train"]["dtype"] == "fp32"


@pytest.mark.slow
def test_a_corrupted_gpu_fails_the_run_alone_with_the_step_and_the_layer(pytester, tmp_path):
    result = pytester.runpytest(*SUITE, "--gpu-inject", "train.corrupt:1", "--gpu-results", str(tmp_path))
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["gpu-burnin verdict: FAIL (2 devices): DATA_MISMATCH: CPU 1 (*): at step 1 *layers.1*"]
    )
    doc = only_result(tmp_path)
    second = next(d["uuid"] for d in doc["devices"] if d["index"] == 1)
    failing_codes = [(f["code"], f["gpu"]) for f in doc["findings"] if f["severity"] == "fail"]
    assert failing_codes == [("DATA_MISMATCH", second)]


def test_ties_of_two_models_at_one_step_are_broken_each_within_its_model(cpu):
    # Model A: device 1 flips a bit once (its replay clears device 0); model B: device 3 is consistently
    # wrong (nothing tells it from device 2). Device 0 must not be held for model B's tie.
    a, b = dataclasses.replace(cpu, name="Test CPU A"), dataclasses.replace(cpu, name="Test CPU B")
    devices = cpus(2, a) + tuple(
        dataclasses.replace(d, index=d.index + 2, uuid=f"CPU-{d.index + 2}") for d in cpus(2, b)
    )
    found = failing(run(devices, fault("corrupt", 1) | fault("skew", 3)))
    assert sorted((f.gpu, f.code) for f in found) == [
        ("CPU-1", Code.DATA_MISMATCH),
        ("CPU-2", Code.INCONCLUSIVE),
        ("CPU-3", Code.INCONCLUSIVE),
    ]
