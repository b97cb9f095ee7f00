"""The benchmark scripts still run (their figures are read by people, not asserted here), and the GPU
check judges each step by what it left (bench/gpu_check.sh, bench/expect.py)."""

import dataclasses
import datetime as dt
import importlib
import json
import os
import re
import subprocess
import sys

import pytest

from bench import expect
from harness import results, verdict
from harness.devices import Device
from harness.records import Code, Direction, Finding, Measurement, Severity
from harness.results import ResultDocument, RunState, TestRecord
from harness.verdict import Status, TestOutcome
from tests.helpers import REPO


def test_matmul_overhead_prints_both_figures_and_their_ratio():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "matmul_overhead.py"),
            "--device",
            "cpu",
            "--size",
            "64",
            "--rounds",
            "2",
            "--seconds",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "median TFLOP/s: bare " in done.stdout and "ratio harness/bare: " in done.stdout


def test_train_overhead_prints_both_step_times_and_their_ratio():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_overhead.py"), "--device", "cpu", "--rounds", "2"]
        + ["--seconds", "0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "median step ms: bare " in done.stdout and ", with fingerprints " in done.stdout
    assert "ratio fingerprinted/bare: " in done.stdout and "the goal is for a GPU" in done.stdout


@pytest.mark.parametrize("script", ["gpu_check.sh", "nccl_compare.sh"])
def test_the_shell_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO / "bench" / script)]).returncode == 0


def test_nccl_compare_without_nccl_tests_says_so_and_exits_4(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ALL_REDUCE_PERF"}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "nccl_compare.sh"), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 4 and "all_reduce_perf not found" in done.stderr


@pytest.mark.slow
def test_the_remediator_scale_bench_runs_small_and_meets_its_goal(tmp_path):
    out = tmp_path / "figures.json"
    argv = [sys.executable, str(REPO / "bench" / "remediator_scale.py"), "--nodes", "200", "--failing", "30"]
    done = subprocess.run([*argv, "--max-nodes", "5", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert (figures["taken_out"], figures["braked_events"], figures["exact"]) == (5, 25, True)


# -- bench/gpu_check.sh judges each step by what it left, through bench/expect.py --------------

GPU0, GPU1 = "GPU-00000000", "GPU-00000001"
STARTED = dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)


def _finding(code, severity, gpu=GPU0, test="gputests/test_memory.py::test_memory"):
    return Finding(code=Code(code), severity=Severity(severity), message=f"{code} on {gpu}", gpu=gpu, test=test)


def _snapshot(source="nvml", gpus=(GPU0, GPU1), problem=""):
    return {"source": source, "problem": problem, "gpus": [{"uuid": g} for g in gpus]}


def _doc(findings=(), *, state=RunState.FINISHED, faults=(), started=STARTED, **changes):
    findings = list(findings)
    nodeid = "gputests/test_memory.py::test_memory"
    document = ResultDocument(
        run_id=f"{started:%Y%m%dT%H%M%SZ}-abcdef",
        node="n1",
        started_at=started,
        device_kind="cuda",
        state=state,
        faults=list(faults),
        devices=[Device(index=i, kind="cuda", name="NVIDIA H100", uuid=g) for i, g in enumerate((GPU0, GPU1))],
        tests=[TestRecord(nodeid=nodeid, group="memory", outcome=TestOutcome.PASSED)],
        measurements=[
            Measurement(metric="memory.verify.gbps", gpu=g, value=2500.0, unit="GB/s", direction=Direction.HIGHER)
            for g in (GPU0, GPU1)
        ],
        findings=findings,
        health={"start": _snapshot(), "before:memory": _snapshot(), "after:memory": _snapshot(), "end": _snapshot()},
        telemetry={nodeid: {GPU0: {"samples": 5}, GPU1: {"samples": 5}}},
        verdict=verdict.decide(findings, {nodeid: TestOutcome.PASSED}),
    )
    return dataclasses.replace(document, **changes)


def _judge(doc, **expected):
    expected = {"exit_code": doc.verdict.exit_code, **expected}
    expected["codes"] = [expect.Expected.parse(c) for c in expected.get("codes", ())]
    return expect.judge_result(doc, **expected)


def test_a_failure_for_the_reason_expected_on_the_gpu_expected_is_as_expected():
    doc = _doc([_finding("DATA_MISMATCH", "fail"), _finding("FAULT_INJECTED", "incomplete", "node")], faults=["x"])
    assert _judge(doc, verdict=Status.FAIL, codes=["DATA_MISMATCH@0"]) == []
    assert _judge(doc, verdict=Status.FAIL, codes=["DATA_MISMATCH@0=fail"]) == []
    assert _judge(doc, verdict=Status.FAIL, codes=["DATA_MISMATCH@1"]) == [
        "no DATA_MISMATCH@1 finding",
        f"unexpected fail DATA_MISMATCH: DATA_MISMATCH on {GPU0}",
    ]
    assert _judge(doc, verdict=Status.FAIL, codes=["DATA_MISMATCH@7"])[0] == "DATA_MISMATCH@7: the run has no GPU 7"
    assert _judge(doc, verdict=Status.FAIL, codes=["DATA_MISMATCH=warning"])[0] == "no DATA_MISMATCH=warning finding"


def test_the_exit_code_of_a_crash_beside_a_result_is_not_its_verdict():
    """A traceback exits 1 like a failed run: the verdict in the file, not the exit code, decides."""
    doc = _doc()
    assert _judge(doc, verdict=Status.PASS, exit_code=1) == ["exit 1, but its verdict pass exits 0"]
    assert _judge(doc, verdict=Status.FAIL, exit_code=1) == [
        "verdict pass, expected fail",
        "exit 1, but its verdict pass exits 0",
    ]


def test_a_failure_for_another_reason_or_an_unrecorded_injection_is_unexpected():
    hang = _finding("HANG", "fail")
    doc = _doc([hang, _finding("FAULT_INJECTED", "incomplete", "node")], faults=["memory.corrupt:0"])
    assert _judge(doc, verdict=Status.FAIL, codes=["DATA_MISMATCH@0"]) == [
        "no DATA_MISMATCH@0 finding",
        f"unexpected fail HANG: HANG on {GPU0}",
    ]
    # A run that injected a fault records it; one that does not say so is not the run asked for.
    assert _judge(_doc([hang], faults=["memory.hang:0"]), verdict=Status.FAIL, codes=["HANG"]) == [
        "no FAULT_INJECTED=incomplete finding"
    ]
    # An error that stops the run counts as much as a failure; a warning or information does not.
    doc = _doc([_finding("TEST_ERROR", "incomplete"), _finding("SIMULATED", "warning", "node")])
    assert _judge(doc, verdict=Status.INCOMPLETE) == [f"unexpected incomplete TEST_ERROR: TEST_ERROR on {GPU0}"]


def test_a_run_that_did_not_finish_is_unexpected_whatever_it_had_found():
    doc = _doc([_finding("HANG", "fail")], state=RunState.ABANDONED)
    assert _judge(doc, verdict=Status.FAIL, codes=["HANG@0"]) == ["the run's state is abandoned, not finished"]


def test_health_must_come_from_the_source_named_for_every_gpu_and_telemetry_from_every_burn():
    assert _judge(_doc(), verdict=Status.PASS, health="nvml", telemetry=True, measured=["memory.*"]) == []
    smi = _doc(health={"start": _snapshot("nvidia-smi"), "end": _snapshot(gpus=(GPU0,), problem="NVML query failed")})
    assert _judge(smi, verdict=Status.PASS, health="nvml") == [
        "health snapshot 'start' from nvidia-smi, expected nvml",
        "health snapshot 'end': NVML query failed",
        f"health snapshot 'end' lacks {GPU1}",
    ]
    assert _judge(_doc(health={}), verdict=Status.PASS, health="nvml") == [
        "no 'start' health snapshot",
        "no 'end' health snapshot",
    ]
    sim = _doc(health={m: _snapshot("sim:healthy.toml") for m in ("start", "end")})
    assert _judge(sim, verdict=Status.PASS, health="sim") == []
    wrong = _judge(sim, verdict=Status.PASS, health="nvml")
    assert wrong[0] == "health snapshot 'start' from sim:healthy.toml, expected nvml"
    nodeid = "gputests/test_memory.py::test_memory"
    quiet = _doc(telemetry={nodeid: {GPU0: {"samples": 3}, GPU1: {"samples": 0}}})
    assert _judge(quiet, verdict=Status.PASS, telemetry=True) == [f"no telemetry sample of {GPU1} during {nodeid}"]
    assert _judge(_doc(telemetry={}), verdict=Status.PASS, telemetry=True) == [f"no telemetry sample during {nodeid}"]
    assert _judge(_doc(), verdict=Status.PASS, measured=["matmul.*"]) == ["no figure for matmul.*"]


def _run_expect(*args):
    done = subprocess.run(
        [sys.executable, "-m", "bench.expect", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    return done.returncode, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


def test_the_newest_result_file_of_the_step_is_judged_and_one_line_says_how(tmp_path):
    older = _doc([_finding("DATA_MISMATCH", "fail")], started=STARTED - dt.timedelta(minutes=5))
    results.write(results.path_for(tmp_path, "n1", older.run_id), older)
    assert _run_expect("result", tmp_path, "--exit", 1, "--verdict", "fail", "--codes", "DATA_MISMATCH@0")[0] == 0
    newer = _doc()
    results.write(results.path_for(tmp_path, "n1", newer.run_id), newer)
    code, line = _run_expect("result", tmp_path, "--exit", 1, "--verdict", "fail", "--codes", "DATA_MISMATCH@0")
    assert code == 1 and line.startswith("UNEXPECTED: verdict pass, expected fail;")
    assert line.endswith(f"({newer.run_id})")
    code, line = _run_expect("result", tmp_path, "--exit", 0, "--verdict", "pass", "--measured", "memory.verify.gbps")
    figures = "memory.verify.gbps 2500 GB/s (GPU 0), memory.verify.gbps 2500 GB/s (GPU 1)"
    assert (code, line) == (0, f"ok: verdict pass; {figures} ({newer.run_id})")


def test_no_result_file_or_an_unreadable_one_is_unexpected_never_a_verdict(tmp_path):
    """A step that crashed before writing its result, or wrote half of one, expected nothing of the kind."""
    assert _run_expect("result", tmp_path / "none", "--exit", 1, "--verdict", "fail") == (
        1,
        f"UNEXPECTED: no result file in {tmp_path / 'none'}",
    )
    (tmp_path / "n1_x.json").write_text('{"schema": "gpu-burnin/result", "schema_ver')
    code, line = _run_expect("result", tmp_path, "--exit", 1, "--verdict", "fail")
    assert code == 1 and line.startswith("UNEXPECTED: ") and "n1_x.json" in line and "not a JSON document" in line


def test_bad_arguments_are_exit_4(tmp_path):
    assert _run_expect("result", tmp_path, "--exit", 1, "--verdict", "failed")[0] == 4
    code, text = _run_expect("result", tmp_path, "--exit", 1, "--verdict", "fail", "--codes", "MELTED@0")
    assert code == 4 and "'MELTED@0': expected CODE[@GPU][=SEVERITY]" in text


def test_a_step_without_a_result_file_is_judged_by_its_exit_code_and_its_lines():
    text = "noise\nNVIDIA H100: fp64 ok; 9.0 s: usable\nmore\n"
    assert expect.judge_log(text, exit_code=0, want_exit=0, lines=[": usable$"]) == (
        [],
        ["NVIDIA H100: fp64 ok; 9.0 s: usable"],
    )
    wrong, _ = expect.judge_log("Traceback (most recent call last):\n", exit_code=1, want_exit=0, lines=[": usable$"])
    assert wrong == ["exit 1, expected 0", "no line matching ': usable$'"]


def test_the_imports_say_what_is_missing_and_whether_that_stops_the_check(monkeypatch):
    real = importlib.import_module

    def without_pandas(name, *args):
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real(name, *args)

    monkeypatch.setattr(expect.importlib, "import_module", without_pandas)
    lines, missing = expect.imports("cpu")
    assert missing == ["pandas"]
    assert "pandas: MISSING (essential): ImportError: No module named 'pandas'" in lines
    assert any(line.startswith("prometheus_client: ") and "not needed" in line for line in lines)


def _fake_python(tmp_path, crash):
    """A python3 for the script under which the commands matching `crash` die with a traceback at once."""
    wrapper = tmp_path / "python3"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in {crash}) exec {sys.executable} -c "raise RuntimeError(\'no result file: a crash\')";; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def _gpu_check(tmp_path, **env):
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "GPU_CHECK_DEVICE": "cpu", **env},
    )
    lines = (out / "summary.txt").read_text().splitlines() if (out / "summary.txt").exists() else []
    steps = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in STEPS}
    return done, steps, lines


STEPS = (
    "imports train traincorrupt memory memcorrupt memhang xid pcie interconnect matmul corrupt hang usable bench "
    "membench tests".split()
)


def test_steps_that_crash_before_writing_a_result_are_unexpected_even_where_a_failure_was_expected(tmp_path):
    """The defect of issue 16, item 15: a traceback exits 1, so the corrupt and hang steps, which
    expect 1, read "ok" with nothing run."""
    python = _fake_python(tmp_path, "*harness.cli*|*bench/*.py*|*-m\\ pytest*")
    done, steps, _ = _gpu_check(tmp_path, PYTHON=python)
    assert done.returncode == 1, done.stdout[-3000:]
    for name in ("corrupt", "hang", "memcorrupt", "memhang", "traincorrupt"):
        assert "UNEXPECTED" in steps.get(name, ""), steps
        assert "no result file" in steps[name]
    assert all(" ok " not in line for name, line in steps.items() if name != "imports"), steps


def test_without_an_essential_package_the_check_stops_at_once_and_says_which(tmp_path):
    blocked = tmp_path / "blocked" / "pandas"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('pandas is not installed here')\n")
    done, steps, lines = _gpu_check(tmp_path, PYTHONPATH=str(blocked.parent))
    assert done.returncode == 1
    assert list(steps) == ["imports"] and "UNEXPECTED" in steps["imports"]
    assert "  pandas: MISSING (essential): ImportError: pandas is not installed here" in lines
    assert lines[-1] == "gpu_check: stopped: UNEXPECTED: essential packages missing: pandas: nothing can be checked"


def test_what_does_not_fit_in_the_time_left_is_skipped_and_said_so(tmp_path):
    done, steps, lines = _gpu_check(tmp_path, GPU_CHECK_BUDGET_S="12")
    assert done.returncode == 1
    for name in ("train", "traincorrupt", "memory", "memcorrupt", "memhang", "pcie", "matmul", "tests"):
        assert " SKIPPED-for-time: needs about " in steps[name], steps
    assert lines[-2].startswith("total: ") and " of a 12 s budget; " in lines[-2] and " SKIPPED-for-time" in lines[-2]
    assert lines[-1] == "gpu_check: NOT every step as expected"


@pytest.mark.slow
def test_the_dry_run_gives_every_expected_result(tmp_path):
    done, steps, lines = _gpu_check(tmp_path)
    assert done.returncode == 0, "\n".join(lines) + done.stdout[-3000:]
    assert list(steps) == STEPS and all(line.split()[1] == "ok" for line in steps.values()), steps
    assert lines[-1] == "gpu_check: every step as expected"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.tgz", "summary.txt"]


def test_proven_steps_are_left_out_on_a_gpu_unless_asked_and_said_so(tmp_path):
    done, steps, lines = _gpu_check(tmp_path, GPU_CHECK_BUDGET_S="12", GPU_CHECK_PROVEN="0")
    assert not {"corrupt", "hang", "bench"} & set(steps), steps
    assert "corrupt, hang: not run (they ran on the H200s of 2026-11-28; GPU_CHECK_PROVEN=1 runs them)" in lines
    assert "bench: not run (it ran on the H200s of 2026-11-28; GPU_CHECK_PROVEN=1 runs it)" in lines


def test_what_a_gpu_runs_by_default_fits_in_six_minutes():
    """The header's estimates of the steps a GPU runs by default (all but those marked *) fit in the
    default budget, and the budget plus a step's 10 s grace to die in 6 minutes."""
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    budget = int(re.search(r"budget=\$\{GPU_CHECK_BUDGET_S:-\$\(pick (\d+) \d+\)\}", script).group(1))
    rows = re.findall(r"^#   (\w+)( \*)?\s.*?\s(\d+)$", script, re.M)
    assert {name for name, _, _ in rows} == set(STEPS)
    default = sum(int(est) for _, proven, est in rows if not proven)
    assert default <= budget and budget + 10 <= 360, (default, budget)
