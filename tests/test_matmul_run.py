"""The matmul run across several workers, on the CPU standing in for GPUs."""

import time

import numpy as np
import pytest
import torch

from gputests.work import matmul, matmul_run
from harness.groups import MatmulSection
from harness.profiles import quick
from harness.records import Code, Severity
from harness.workers.devicetest import Scope
from harness.workers.faults import parse
from tests.helpers import cpus

PROFILE = quick().for_cpu().with_overrides(duration_s=0.4)
SMALL = PROFILE.with_section(MatmulSection(size=64, ring=2))


def run(devices, faults=None, profile=SMALL):
    scope = Scope(devices=tuple(devices), profile=profile, test="t::matmul", group="matmul", faults=faults or {})
    return matmul_run.run(scope)


def test_every_device_reports_every_dtype(cpu):
    devices = cpus(2, cpu)
    outcome = run(devices)
    assert outcome.findings == []
    metrics = {(m.gpu, m.metric) for m in outcome.measurements}
    assert metrics == {(d.uuid, f"matmul.{dt}.tflops") for d in devices for dt in ("bf16", "fp16", "fp8", "fp32")}
    assert all(
        m.value > 0 and m.samples >= matmul.MIN_WINDOWS and m.low <= m.value <= m.high for m in outcome.measurements
    )


def test_a_consistently_wrong_device_is_named_by_the_others_with_an_exact_count(cpu):
    devices = cpus(3, cpu)
    outcome = run(devices, {2: parse("skew:2")})
    mismatches = [f for f in outcome.findings if f.code is Code.DATA_MISMATCH]
    assert [f.gpu for f in mismatches] == ["CPU-2"]
    finding = mismatches[0]
    assert finding.severity is Severity.FAIL and finding.details["majority"] is True
    # Count independently: the skew flips a[0, :4], so only row 0 of the bf16 product can differ.
    a = matmul.pattern(64, 64, matmul.DEFAULT_SEED, 1, torch.device("cpu"))
    b = matmul.pattern(64, 64, matmul.DEFAULT_SEED, 2, torch.device("cpu")).bfloat16()
    skewed = a.clone()
    skewed[0, :4] = -skewed[0, :4]
    expected = int(
        np.count_nonzero(
            (a.bfloat16() @ b)[0].view(torch.int16).numpy() != (skewed.bfloat16() @ b)[0].view(torch.int16).numpy()
        )
    )
    assert expected > 0
    assert finding.details["bad_elements"] == expected
    assert f"in {expected} elements across 1 rows" in finding.message


def test_a_corrupted_product_fails_only_its_device(cpu):
    outcome = run(cpus(2, cpu), {1: parse("corrupt:1")})
    assert [(f.code, f.gpu, f.details["bad_elements"]) for f in outcome.findings] == [(Code.DATA_MISMATCH, "CPU-1", 1)]
    assert "1 of " in outcome.findings[0].message and "1 elements in all" in outcome.findings[0].message


@pytest.mark.slow
def test_a_hung_device_ends_as_hang_and_the_others_keep_their_figures(cpu):
    # A stall limit with slack: on a 16-core H200 machine, 4 s once caught the healthy worker silent
    # too (in a first call of some dtype, it seems), which made it look hung.
    profile = SMALL.with_overrides(hang_timeout_s=10.0)
    began = time.monotonic()
    outcome = run(cpus(2, cpu), {0: parse("hang")}, profile)
    assert time.monotonic() - began < 45
    found = [(f.code, f.severity, f.gpu) for f in outcome.findings]
    assert found == [(Code.HANG, Severity.FAIL, "CPU-0")], [f.message for f in outcome.findings]
    assert {m.gpu for m in outcome.measurements} == {"CPU-1"}


def test_a_crashed_or_failing_worker_is_a_test_error_not_a_verdict_on_the_hardware(cpu):
    outcome = run(cpus(2, cpu), {0: parse("crash"), 1: parse("error:1")})
    found = {f.gpu: f for f in outcome.findings}
    assert {f.code for f in found.values()} == {Code.TEST_ERROR}
    assert all(f.severity is Severity.INCOMPLETE for f in found.values())
    assert "signal SIGSEGV" in found["CPU-0"].message
    assert "injected fault: CUDA error" in found["CPU-1"].message
    assert "Traceback" in found["CPU-1"].details["traceback"]
