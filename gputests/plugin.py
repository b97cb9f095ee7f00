"""The gpu-burnin pytest plugin: options, markers, the `burnin` fixture, the verdict.

Loaded by the `pytest11` entry point when installed and by the root conftest.py in
a checkout. It stays out of the way of any pytest session that selects no burn-in
test (one marked with a test group) and is not given --gpu-results.

When it is active, the session's exit status is the verdict's: 0 pass, 1 fail,
2 incomplete (4 stays pytest's usage error).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from gputests import summary
from gputests.faults import GROUPS, KINDS, Fault
from gputests.session import BurnIn, Options
from harness.devices import Device
from harness.errors import ConfigError
from harness.profiles import PROFILES, Profile
from harness.records import Code, Finding, Measurement
from harness.verdict import Status, Verdict

MARKERS = {
    "matmul": "matrix-multiply throughput with a silent-data-corruption check",
    "memory": "GPU memory pattern and ECC stress",
    "nvlink": "NVLink bandwidth between GPUs",
    "pcie": "PCIe bandwidth between host and GPUs",
    "nccl": "NCCL all-reduce across GPUs",
    "health": "NVML health before and after the suite",
}
_STATE = pytest.StashKey[BurnIn]()
_SIGTERM = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu", "gpu-burnin (GPU burn-in tests)")
    group.addoption(
        "--gpu-device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="run on the CUDA GPUs (default) or on the CPU as a self-test",
    )
    group.addoption(
        "--gpu-profile",
        choices=sorted(PROFILES),
        default="quick",
        help="how long and hard to burn: quick (preflight), standard (periodic), soak",
    )
    group.addoption(
        "--gpu-duration",
        type=float,
        metavar="SECONDS",
        help="seconds each test burns the devices (default: the profile's)",
    )
    group.addoption(
        "--gpu-baseline",
        type=Path,
        metavar="FILE",
        help="judge against this baseline file only; a GPU it does not cover is an error",
    )
    group.addoption(
        "--gpu-baseline-dir",
        type=Path,
        metavar="DIR",
        help="pick each GPU model's baseline from this directory (default: the packaged baselines)",
    )
    group.addoption(
        "--gpu-results", type=Path, metavar="DIR", help="write the run's JSON result file into this directory"
    )
    group.addoption("--gpu-expect-gpus", type=int, metavar="N", help="fail unless exactly N GPUs are visible")
    group.addoption(
        "--gpu-hang-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds without progress before a device worker is declared hung",
    )
    group.addoption(
        "--gpu-inject",
        action="append",
        default=[],
        metavar="FAULT",
        help=f"inject a fault to test the pipeline, [GROUP.]KIND[:DEVICE] with KIND one of {', '.join(KINDS)}; "
        "such a run cannot pass",
    )
    group.addoption("--gpu-run-id", metavar="ID", help="the run id (set by `gpu-burnin run`)")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        options = Options.from_values(
            device=config.getoption("gpu_device"),
            profile=config.getoption("gpu_profile"),
            duration=config.getoption("gpu_duration"),
            hang_timeout=config.getoption("gpu_hang_timeout"),
            baseline=config.getoption("gpu_baseline"),
            baseline_dir=config.getoption("gpu_baseline_dir"),
            results_dir=config.getoption("gpu_results"),
            expect_gpus=config.getoption("gpu_expect_gpus"),
            inject=config.getoption("gpu_inject"),
            run_id=config.getoption("gpu_run_id"),
        )
    except ConfigError as err:
        raise pytest.UsageError(str(err)) from err
    config.stash[_STATE] = BurnIn(options)
    if options.results_dir is not None and threading.current_thread() is threading.main_thread():
        # A pod being stopped still gets its result file: SIGTERM ends the session as Ctrl-C does.
        config.stash[_SIGTERM] = signal.signal(signal.SIGTERM, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(_SIGTERM, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, pytest.CollectReport]:
    # A test module skipped or broken at import never becomes a test: it must not vanish from the verdict.
    report = yield
    if report.failed or report.skipped:
        summary_line = _skip_reason(report) if report.skipped else report.longreprtext.strip().splitlines()[-1:]
        collector.config.stash[_STATE].on_report(
            report.nodeid, "collect", report.outcome, 0.0, "".join(summary_line), report.longreprtext
        )
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    # Here rather than at collection_finish: this runs only once collection succeeded.
    state = session.config.stash[_STATE]
    items = [(item.nodeid, group_of(item)) for item in session.items]
    if not session.config.option.collectonly and (any(group for _, group in items) or state.options.results_dir):
        try:
            state.start(items, session.config.option.markexpr or "")
        except ConfigError as err:
            raise pytest.UsageError(str(err)) from err
    return (yield)


@pytest.fixture
def burnin(request: pytest.FixtureRequest) -> Recorder:
    """What a burn-in test needs: the devices, the profile, its faults, and a place to record."""
    group = group_of(request.node)
    if not group:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses `burnin` without a test-group marker ({', '.join(GROUPS)})"
        )
    state = request.config.stash[_STATE]
    if not state.devices:
        pytest.skip(state.inventory.problem)
    return Recorder(state, request.node.nodeid, group)


class Recorder:
    def __init__(self, state: BurnIn, test: str, group: str):
        self._state = state
        self.test = test
        self.group = group

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._state.devices

    @property
    def profile(self) -> Profile:
        return self._state.options.profile

    def faults(self) -> dict[int, Fault]:
        return self._state.faults_for(self.group)

    def record(self, measurements: list[Measurement], findings: list[Finding]) -> None:
        for m in measurements:
            if m.group != self.group or m.test != self.test:
                raise ValueError(f"{m.metric} from {m.test!r} recorded by {self.test} ({self.group})")
            if not math.isfinite(m.value):
                raise ValueError(f"{m.metric} of {m.gpu} is {m.value}: a figure must be a finite number")
        self._state.add(measurements, findings)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    group = group_of(item)
    state = item.config.stash[_STATE]
    if group and state.active:
        failing = state.judge_test(item.nodeid, group)
        if failing:
            pytest.fail("\n".join(f"{f.code}: {f.message}" for f in failing), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = item.config.stash[_STATE]
    if state.active:  # every selected test counts, burn-in or not: a failure anywhere is not a pass
        summary_line = call.excinfo.exconly().strip().splitlines()[-1] if call.excinfo else ""
        if report.skipped:
            summary_line = _skip_reason(report)
        state.on_report(item.nodeid, report.when, report.outcome, report.duration, summary_line, report.longreprtext)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    result = yield
    state = item.config.stash[_STATE]
    if state.active:
        state.checkpoint()  # after every test, so a run killed later keeps what it measured
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None or not state.active or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return
    try:
        verdict = state.finish(_abnormal(exitstatus))
    except OSError as err:  # the verdict stands, but a pass that left no record is not a pass
        sys.stderr.write(f"gpu-burnin: could not write the result file {state.result_path}: {err}\n")
        verdict = state.verdict or Verdict(status=Status.INCOMPLETE)
        if verdict.status is Status.PASS:
            verdict = Verdict(status=Status.INCOMPLETE, reasons=(f"the result file could not be written: {err}",))
            state.verdict = verdict
    session.exitstatus = int(verdict.exit_code)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.active or state.verdict is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("gpu-burnin")
    for line in summary.table(state.assessments()):
        write(line)
    lines = summary.finding_lines(state.findings)
    if lines:
        write("")
        for line in lines:
            write(line)
    write("")
    colour = {"pass": {"green": True}, "fail": {"red": True}}.get(state.verdict.status, {"yellow": True})
    write(summary.verdict_line(state.verdict, len(state.devices), state.result_path), bold=True, **colour)


def group_of(item: pytest.Item) -> str:
    """The test group of a burn-in test (its first group marker), or ""."""
    for marker in item.iter_markers():
        if marker.name in MARKERS:
            return marker.name
    return ""


def _abnormal(exitstatus: int) -> tuple[Code, str] | None:
    """Why pytest's own exit status blocks a pass, if it does."""
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        return None  # failures are judged test by test; no tests is judged by the verdict
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return Code.INTERRUPTED, "the run was interrupted before it finished"
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        return Code.TEST_ERROR, "pytest reported an internal error (see its output)"
    return Code.TEST_ERROR, f"pytest ended with exit status {exitstatus}"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return report.longreprtext


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
