"""The all-reduce test on the gloo stand-in: figures, exact checks, hangs, attribution, the search, MPI."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from gputests.work import nccl_run
from harness import compare
from harness.baselines import Baseline, MetricSpec, Provenance
from harness.groups import NcclSection
from harness.profiles import quick
from harness.records import Code, Direction, Remediation, Severity
from harness.workers.devicetest import Scope
from harness.workers.faults import parse
from tests.fake_mpi import FakeMpi
from tests.helpers import cpus

PROFILE = quick().for_cpu().with_overrides(hang_timeout_s=5.0).with_section(NcclSection(sizes_mib=(1,), iterations=2))
REPO = Path(__file__).resolve().parent.parent


def run(devices, faults=None, profile=PROFILE, baselines=None, mpi=None, on_progress=None):
    scope = Scope(
        devices=tuple(devices),
        profile=profile,
        test="t::nccl",
        group="nccl",
        faults=faults or {},
        baselines=baselines or {},
        node="node-a",
        mpi=mpi,
        on_progress=on_progress,
    )
    return nccl_run.run(scope)


def failing(outcome):
    return [f for f in outcome.findings if f.severity in (Severity.FAIL, Severity.INCOMPLETE)]


def descendants() -> set[int]:
    """Every process below this one (the forkserver that starts the workers and its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def worker_processes() -> set[int]:
    """Descendants other than the long-lived forkserver and its resource tracker."""
    keep = set()
    for pid in descendants():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmdline or b"resource_tracker" in cmdline:
            keep.add(pid)
    return descendants() - keep


# -- the test on gloo ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("count", [2, 4])
def test_every_rank_measures_and_checks_every_size(cpu, count):
    profile = PROFILE.with_section(NcclSection(sizes_mib=(1, 2), iterations=2))
    outcome = run(cpus(count, cpu), profile=profile)
    assert failing(outcome) == []
    figures = {(m.gpu, m.metric): m for m in outcome.measurements}
    assert set(figures) == {(f"CPU-{i}", nccl_run.metric_name(mib)) for i in range(count) for mib in (1, 2)}
    assert all(m.value > 0 and m.samples == nccl_run.WINDOWS and m.unit == "GB/s" for m in figures.values())
    for mib in (1, 2):  # one team figure per size, the slowest rank's, on every rank
        same = {(m.value, m.low, m.high) for m in outcome.measurements if m.metric == nccl_run.metric_name(mib)}
        assert len(same) == 1
    assert outcome.facts["nccl.backend"] == "gloo"
    assert outcome.facts["nccl.version"] == torch.__version__
    assert outcome.facts["nccl.nvls"] == "no"


@pytest.mark.slow
def test_a_late_rank_costs_no_rank_its_figure(cpu):
    """Rank 1 arrives 0.5 s late at every window, far longer than a window here. Every rank's
    figure must exclude that wait: one figure for all, no LOW_THROUGHPUT from the floor, the
    node comparison or the pairwise search (the floor is a tenth of the healthy figure)."""
    devices = cpus(4, cpu)
    healthy = min(m.value for m in run(devices).measurements)
    baseline = _floor_baseline(healthy / 10, node_tolerance=0.1)
    baselines = {d.uuid: baseline for d in devices}
    outcome = run(devices, {1: parse("nccl.late:1")}, baselines=baselines)
    judged = compare.findings(compare.assess(outcome.measurements, devices, baselines))
    low = [f for f in outcome.findings + judged if f.code is Code.LOW_THROUGHPUT]
    assert low == [], [f.message for f in low]
    assert {m.gpu for m in outcome.measurements} == {d.uuid for d in devices}
    assert len({m.value for m in outcome.measurements}) == 1
    assert [f for f in failing(outcome) if f.code is not Code.FAULT_INJECTED] == []


@pytest.mark.slow
def test_a_corrupt_value_in_a_later_window_is_caught(cpu):
    """Every window's result is checked, not only a check before and after the timing: the
    fourth window's (the warm-up is the first) carries the flipped bit."""
    outcome = run(cpus(3, cpu), {2: parse("nccl.corrupt@4:2")})
    mismatch = [f for f in outcome.findings if f.code is Code.DATA_MISMATCH]
    assert [(f.gpu, f.severity, f.details["rank"], f.details["bad_values"]) for f in mismatch] == [
        ("CPU-2", Severity.FAIL, 2, 1)
    ]
    assert not any(f.code is Code.FAULT_NOT_APPLIED for f in outcome.findings)


@pytest.mark.slow
def test_the_ranks_nccl_log_directory_is_gone_after_the_test_even_when_a_rank_is_killed(cpu):
    def ours():
        return set(Path(tempfile.gettempdir()).glob("gpu-burnin-nccl-*"))

    before = ours()
    seen = set()
    outcome = run(cpus(3, cpu), {1: parse("nccl.hang@2:1")}, on_progress=lambda device, progress: seen.update(ours()))
    assert any(f.code is Code.HANG for f in outcome.findings)
    assert seen - before, "the test made no log directory for its ranks"
    assert ours() - before == set()


@pytest.mark.slow
def test_a_wrong_value_in_one_ranks_buffer_names_that_ranks_device(cpu):
    outcome = run(cpus(3, cpu), {2: parse("nccl.corrupt:2")})
    mismatch = [f for f in outcome.findings if f.code is Code.DATA_MISMATCH]
    assert [(f.gpu, f.severity, f.details["rank"]) for f in mismatch] == [("CPU-2", Severity.FAIL, 2)]
    assert mismatch[0].details["first_bad"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "where"),
    [("nccl.hang:1", "never joins"), ("nccl.hang@2:1", "hangs among the collectives")],
)
def test_a_hung_rank_is_hang_within_its_limit_and_leaves_no_process(cpu, spec, where):
    before = worker_processes()
    began = time.monotonic()
    outcome = run(cpus(3, cpu), {1: parse(spec)})
    took = time.monotonic() - began
    hangs = [f for f in outcome.findings if f.code is Code.HANG and f.severity is Severity.FAIL]
    assert [f.gpu for f in hangs] == ["CPU-1"], where
    stopped = [f for f in outcome.findings if f.code is Code.TEST_ERROR]
    assert {f.gpu for f in stopped} <= {"CPU-0", "CPU-2"}
    assert all(f.severity is Severity.INFO for f in stopped)
    assert took < PROFILE.startup_timeout_s + 4 * PROFILE.hang_timeout_s
    assert worker_processes() - before == set()


@pytest.mark.slow
def test_a_crashed_rank_is_its_own_error_and_the_others_are_stopped(cpu):
    outcome = run(cpus(3, cpu), {0: parse("nccl.crash@2:0")})
    errors = [f for f in failing(outcome)]
    assert [(f.gpu, f.code) for f in errors if f.code is not Code.FAULT_INJECTED] == [("CPU-0", Code.TEST_ERROR)]


def _floor_baseline(floor: float, node_tolerance: float | None = None) -> Baseline:
    metric = nccl_run.metric_name(1)
    spec = MetricSpec(
        name=metric,
        unit="GB/s",
        direction=Direction.HIGHER,
        limit=floor,
        node_tolerance=node_tolerance,
        required=True,
        provenance=Provenance(kind="estimate", source="a floor the slow rank misses"),
    )
    return Baseline(path=Path("t.toml"), model="Test CPU", device="cpu", names=("Test CPU",), metrics={metric: spec})


@pytest.mark.slow
def test_the_search_names_a_planted_slow_rank_among_four(cpu):
    devices = cpus(4, cpu)
    # First the team's healthy figure, then a floor that the slowed team misses by far.
    healthy = run(devices)
    figure = min(m.value for m in healthy.measurements)
    baseline = _floor_baseline(figure / 2.5)
    outcome = run(devices, {2: parse("nccl.slow:2")}, baselines={d.uuid: baseline for d in devices})
    named = [f for f in outcome.findings if f.code is Code.LOW_THROUGHPUT]
    assert [(f.gpu, f.details["rank"]) for f in named] == [("CPU-2", 2)], [f.message for f in outcome.findings]
    assert "rank 2" in named[0].message
    judged = {m.gpu: m for m in outcome.measurements}
    assert set(judged) == {d.uuid for d in devices}
    # The others are judged by the team without the slow rank: above the floor the whole team missed.
    assert all(judged[g].value >= baseline.metrics[nccl_run.metric_name(1)].limit for g in ("CPU-0", "CPU-1", "CPU-3"))


@pytest.mark.slow
@pytest.mark.parametrize(("required", "severity"), [(True, Severity.INCOMPLETE), (False, Severity.INFO)])
def test_one_rank_runs_the_path_and_has_nothing_to_measure(cpu, required, severity):
    baseline = _floor_baseline(1e-6)
    spec = dataclasses.replace(baseline.metrics[nccl_run.metric_name(1)], required=required)
    baseline = dataclasses.replace(baseline, metrics={spec.name: spec})
    (device,) = cpus(1, cpu)
    outcome = run([device], baselines={device.uuid: baseline})
    assert outcome.measurements == []
    assert [(f.code, f.severity) for f in outcome.findings] == [(Code.NOTHING_TO_TEST, severity)]
    assert outcome.facts["nccl.backend"] == "gloo"


# -- across nodes, without MPI ----------------------------------------------------------------


def _absent_node(value):
    """What a second node says whose one rank never reached the meeting: it is waiting too."""
    if isinstance(value, tuple) and len(value) == 2:  # (node, devices)
        return [("node-b", 1)]
    if isinstance(value, tuple) and len(value) == 3:  # (node, failed, ok) after a step
        return [("node-b", False, False)]
    raise AssertionError(f"node-b was not expected to share {value!r}")


@pytest.mark.slow
def test_ranks_that_never_all_meet_are_incomplete_check_config_not_hung(cpu):
    """A job of two nodes whose second node's rank never reaches the meeting (a firewall, a wrong
    address): the ranks here wait out the join's limit. That is the set-up's problem: incomplete,
    check-config, on every GPU; no HANG, no reset."""
    mpi = FakeMpi(["node-a", "node-b"], others=_absent_node)
    mpi.meeting_host = "127.0.0.1"
    profile = dataclasses.replace(PROFILE, startup_timeout_s=10.0)
    outcome = run(cpus(2, cpu), profile=profile, mpi=mpi)
    assert not [f for f in outcome.findings if f.code is Code.HANG]
    found = [(f.gpu, f.code, f.severity, f.remediation) for f in failing(outcome)]
    expected = (Code.TEST_ERROR, Severity.INCOMPLETE, Remediation.CHECK_CONFIG)
    assert sorted(found) == [("CPU-0", *expected), ("CPU-1", *expected)], [f.message for f in outcome.findings]
    assert all("never all met" in f.message for f in failing(outcome))
    assert outcome.measurements == []


# -- whole runs: the CLI, and MPI ------------------------------------------------------------


@pytest.mark.slow
def test_gpu_burnin_run_records_busbw_and_passes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--device", "cpu", "-m", "nccl", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    doc = json.loads(path.read_text())
    metrics = {m["metric"] for m in doc["measurements"]}
    assert metrics == {"nccl.allreduce.1mib.busbw", "nccl.allreduce.4mib.busbw"}
    assert doc["verdict"]["status"] == "pass"


def _mpiexec() -> str | None:
    found = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return found


@pytest.mark.slow
@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")
def test_under_mpiexec_two_nodes_make_one_job_with_a_verdict_each(tmp_path):
    command = [
        _mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "pytest",
        "gputests",
        "-m",
        "nccl",
        "--gpu-device",
        "cpu",
        "--gpu-results",
        str(tmp_path),
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (job,) = (tmp_path / "jobs").glob("*.json")
    data = json.loads(job.read_text())
    assert data["schema"] == "gpu-burnin/job"
    assert [n["verdict"] for n in data["nodes"]] == ["pass", "pass"]
    names = [n["node"] for n in data["nodes"]]
    assert len(set(names)) == 2
    for entry in data["nodes"]:
        result = entry["result"]
        assert result["run_id"] == data["run_id"]
        assert result["host"]["mpi"].endswith("of 2")
        ranks = {m["gpu"] for m in result["measurements"]}
        assert len(ranks) == 2  # two stand-in devices per node: four ranks in all
        metrics = {m["metric"] for m in result["measurements"]}
        assert metrics == {nccl_run.metric_name(mib, across=a) for mib in (1, 4) for a in (False, True)}
    assert len(list(tmp_path.glob("*.json"))) == 2  # each node's own result too


@pytest.mark.slow
@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")
def test_a_node_whose_team_lost_another_node_is_incomplete_not_a_pass(tmp_path):
    """Node 0's rank dies inside the collectives; node 1's ranks are healthy but their all-reduce
    never finished: node 1 must not pass (its stopped ranks excuse no missing figure)."""
    suite = [sys.executable, "-m", "pytest", "gputests", "-m", "nccl", "--gpu-device", "cpu"]
    suite += ["--gpu-cpu-devices", "1", "--gpu-results", str(tmp_path), "--gpu-hang-timeout", "5"]
    suite += ["-p", "no:cacheprovider", "-q"]
    command = [_mpiexec(), "-n", "1", *suite, "--gpu-inject", "nccl.crash@2:0", ":", "-n", "1", *suite]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    (job,) = (tmp_path / "jobs").glob("*.json")
    nodes = json.loads(job.read_text())["nodes"]
    assert [n["verdict"] for n in nodes] == ["incomplete", "incomplete"]
    survivor = nodes[1]["result"]
    codes = {(f["code"], f["severity"]) for f in survivor["findings"]}
    assert ("TEST_ERROR", "incomplete") in codes
    assert any("could not finish without node" in f["message"] for f in survivor["findings"])
