"""The memory run across several workers, on the CPU standing in for GPUs, and through pytest end to end."""

import dataclasses
import time

import pytest

from gputests.work import memory, memory_run
from gputests.work.memory_patterns import PATTERNS, RANDOM_PASSES
from harness.groups import MemorySection
from harness.profiles import quick
from harness.records import Code, Direction, Severity
from harness.workers.devicetest import Scope
from harness.workers.faults import parse
from tests.helpers import cpus, only_result

PROFILE = quick().for_cpu().with_overrides(duration_s=0.3)
SMALL = PROFILE.with_section(MemorySection(fraction=0.9, chunk_mib=2, max_mib=8))
PER_PATTERN = {memory.metric_name(p) for p in PATTERNS}
METRICS = {"memory.coverage", "memory.verify.gbps", "memory.bad_words"} | PER_PATTERN
PASSES = {"walking-ones": 32, "checkerboard": 2, "moving-inversions": 3, "random": RANDOM_PASSES["cpu"], "address": 2}


def run(devices, faults=None, profile=SMALL):
    scope = Scope(devices=tuple(devices), profile=profile, test="t::memory", group="memory", faults=faults or {})
    return memory_run.run(scope)


def figures(outcome, uuid):
    return {m.metric: m for m in outcome.measurements if m.gpu == uuid}


def test_every_device_reports_coverage_bad_words_and_each_patterns_bandwidth(cpu):
    devices = cpus(2, cpu)
    outcome = run(devices)
    assert outcome.findings == []
    assert {(m.gpu, m.metric) for m in outcome.measurements} == {(d.uuid, name) for d in devices for name in METRICS}
    for device in devices:
        found = figures(outcome, device.uuid)
        coverage, bad = found["memory.coverage"], found["memory.bad_words"]
        assert 0 < coverage.value < 1 and coverage.unit == "fraction"  # 8 MiB of the host's memory
        assert (bad.value, bad.samples, bad.direction, bad.unit) == (0.0, 1, Direction.LOWER, "words")
        rounds = found["memory.verify.gbps"].samples  # a window per complete round
        assert rounds >= 1
        for pattern in PATTERNS:  # each pattern its own figure, a window per pass
            gbps = found[memory.metric_name(pattern)]
            assert gbps.value > 0 and gbps.unit == "GB/s" and gbps.low <= gbps.value <= gbps.high
            assert gbps.samples >= PASSES.get(pattern, 1) * rounds


def test_coverage_is_bytes_verified_over_the_devices_memory(cpu):
    device = dataclasses.replace(cpu, memory_bytes=32 << 20)
    outcome = run([device])
    assert figures(outcome, device.uuid)["memory.coverage"].value == pytest.approx(0.25)  # 8 of 32 MiB


def test_a_flipped_bit_is_one_bad_word_on_its_device_described_to_the_bit(cpu):
    outcome = run(cpus(2, cpu), {1: parse("corrupt:1")})
    assert [(f.code, f.severity, f.gpu) for f in outcome.findings] == [(Code.DATA_MISMATCH, Severity.FAIL, "CPU-1")]
    finding = outcome.findings[0]
    assert finding.metric == "memory.bad_words" and finding.remediation == "replace-gpu"
    # The fault fires at the first fault point: the zeros pass, word 0 of the last of the 4 chunks, bit 0.
    assert "1 bad words (zeros 1)" in finding.message
    assert "chunk 3 word 0: expected 0x00000000, read 0x00000001, xor 0x00000001: bit 0 0->1 (stuck-at-1)" in (
        finding.message
    )
    assert finding.details["bad_words"] == 1 and finding.details["by_pattern"] == {"zeros": 1}
    assert finding.details["mismatches"] == [
        {
            "pattern": "zeros",
            "pass": "zeros",
            "chunk": 3,
            "offset": 0,
            "expected": 0,
            "found": 1,
            "xor": 1,
            "bits": [0],
            "kind": "stuck-at-1",
        }
    ]
    assert figures(outcome, "CPU-1")["memory.bad_words"].value == 1.0
    assert figures(outcome, "CPU-0")["memory.bad_words"].value == 0.0


@pytest.mark.slow
def test_a_hung_device_ends_as_hang_and_the_others_keep_their_figures(cpu):
    profile = SMALL.with_overrides(hang_timeout_s=10.0)
    began = time.monotonic()
    outcome = run(cpus(2, cpu), {0: parse("hang")}, profile)
    assert time.monotonic() - began < 45
    found = [(f.code, f.severity, f.gpu) for f in outcome.findings]
    assert found == [(Code.HANG, Severity.FAIL, "CPU-0")], [f.message for f in outcome.findings]
    assert {m.gpu for m in outcome.measurements} == {"CPU-1"}
    assert set(figures(outcome, "CPU-1")) == METRICS


def test_a_crashed_or_failing_worker_is_a_test_error_not_a_verdict_on_the_hardware(cpu):
    outcome = run(cpus(2, cpu), {0: parse("crash"), 1: parse("error:1")})
    assert {f.code for f in outcome.findings} == {Code.TEST_ERROR}, [f.message for f in outcome.findings]
    found = {f.gpu: f for f in outcome.findings}
    assert all(f.severity is Severity.INCOMPLETE for f in found.values())
    assert "signal SIGSEGV" in found["CPU-0"].message
    assert "memory zeros raised" in found["CPU-1"].message and "injected fault: CUDA error" in found["CPU-1"].message
    assert found["CPU-1"].metric == "memory.zeros.verify.gbps"
    assert {m.gpu for m in outcome.measurements} == {"CPU-1"}  # the other patterns ran; the crashed worker has none
    ran = {m.metric for m in outcome.measurements}
    assert memory.metric_name("ones") in ran and memory.metric_name("zeros") not in ran
    assert "memory.verify.gbps" not in ran  # no round was complete: the error stands, no figure hides it


def test_jobs_come_from_the_profile(cpu):
    job = memory_run._job(cpu, SMALL)
    assert (job.fraction, job.chunk_bytes, job.max_bytes, job.duration_s) == (0.9, 2 << 20, 8 << 20, 0.3)
    assert job.patterns == memory.PATTERNS
    gpu_job = memory_run._job(cpu, quick())
    assert (gpu_job.chunk_bytes, gpu_job.max_bytes, gpu_job.duration_s) == (1 << 30, None, 60.0)


# -- end to end, through pytest and the plugin ---------------------------------------------

SUITE = ("-p", "no:cacheprovider", "--pyargs", "gputests", "--gpu-device", "cpu", "-m", "memory", "--gpu-duration", "1")


@pytest.mark.slow
def test_the_memory_self_test_passes_with_its_three_figures_judged(pytester, tmp_path):
    result = pytester.runpytest(*SUITE, "--gpu-results", str(tmp_path))
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["CPU 0*memory.bad_words*0 words*ok", "CPU 0*memory.coverage*ok", "CPU 0*memory.verify.gbps*GB/s*ok"]
    )
    doc = only_result(tmp_path)
    assert doc["verdict"]["status"] == "pass" and [t["outcome"] for t in doc["tests"]] == ["passed"]
    assert {m["metric"] for m in doc["measurements"]} == METRICS
    assert doc["baselines"][0]["model"] == "CPU self-test" and doc["baselines"][0]["file"].endswith("cpu-selftest.toml")
    assert not [f for f in doc["findings"] if f["severity"] in ("fail", "incomplete")], doc["findings"]


@pytest.mark.slow
def test_one_flipped_bit_fails_the_memory_self_test(pytester, tmp_path):
    result = pytester.runpytest(*SUITE, "--gpu-inject", "corrupt", "--gpu-results", str(tmp_path))
    assert result.ret == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*DATA_MISMATCH*CPU 0 (*): 1 bad words (zeros 1); first: zeros (zeros) chunk 3 word 0*"]
    )
    result.stdout.fnmatch_lines(["gpu-burnin verdict: FAIL (2 devices): DATA_MISMATCH: CPU 0*"])
    doc = only_result(tmp_path)
    assert {"DATA_MISMATCH", "FAULT_INJECTED", "OVER_LIMIT"} <= {f["code"] for f in doc["findings"]}  # OVER: ceiling 0
    bad = {m["gpu"]: m["value"] for m in doc["measurements"] if m["metric"] == "memory.bad_words"}
    assert sorted(bad.values()) == [0.0, 1.0] and doc["verdict"]["status"] == "fail"
    assert bad[doc["devices"][0]["uuid"]] == 1.0  # the fault goes into device 0 only


def result(pattern: str, round_: int, gb: float, seconds: float, passes: int = 1) -> memory.PatternResult:
    per = gb * 1e9 / passes
    return memory.PatternResult(
        pattern=pattern,
        round=round_,
        windows=tuple(per / (seconds / passes) / 1e9 for _ in range(passes)),
        bytes_verified=int(gb * 1e9),
        seconds=seconds,
        bad_words=0,
    )


def test_the_round_figure_weighs_each_pattern_by_the_time_it_takes_and_counts_complete_rounds_only():
    tally = memory_run._Tally()
    for r in (0, 1):
        tally.add(result("walking-ones", r, 3200.0, 1.28, passes=32))  # 2500 GB/s
        tally.add(result("random", r, 100.0, 1.0))  # 100 GB/s: a slow pattern, one pass of 33
    tally.add(result("walking-ones", 2, 3200.0, 1.28, passes=32))  # the deadline came: round 2 has no random
    assert tally.windows["random"] == [100.0] * 2 and tally.windows["walking-ones"] == [2500.0] * 96
    # The median of every pass's window, the old figure, would be 2500: the slow pattern hidden.
    assert tally.round_windows(("walking-ones", "random")) == [pytest.approx(3300 / 2.28)] * 2
