"""The gpu-burnin pytest plugin: options, markers, the `burnin` fixture, the verdict.

Loaded by the `pytest11` entry point when installed and by the root conftest.py in
a checkout. It stays out of the way of any pytest session that selects no burn-in
test (one marked with a test group) and is not given --gpu-results.

Its options are declared once, in harness/options.py. When it is active, the
session's exit status is the verdict's: 0 pass, 1 fail,
2 incomplete (4 stays pytest's usage error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
from collections.abc import Callable, Generator
from typing import Any

import pytest

from gputests import rootdir, summary
from gputests.progress import ProgressLines
from gputests.session import BurnIn
from harness import options
from harness.devices import Device
from harness.errors import ConfigError
from harness.nvml.dcgm import findings as dcgm_findings
from harness.nvml.dcgm import run_diag
from harness.profiles import GROUPS, Profile
from harness.records import Code, Finding
from harness.workers import Progress
from harness.workers.devicetest import Outcome, Scope

DCGM_TIMEOUT_S = {1: 300.0, 2: 900.0, 3: 3600.0, 4: 7200.0}
"""How long each dcgmi diag level may take: DCGM's own estimates, doubled."""
_STATE = pytest.StashKey[BurnIn]()
_EXPLICIT_RESULTS = pytest.StashKey[bool]()
_SIGTERM = pytest.StashKey[Any]()
_PROGRESS = pytest.StashKey[ProgressLines | None]()


class Judged(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """A burn-in test stopped by its own findings (a failure, a hang, a worker error), not by a bug."""


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_to_pytest(parser.getgroup("gpu", "gpu-burnin (GPU burn-in tests)"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # `--gpu-results DIR` moved pytest's rootdir before this plugin's options were known.
    rootdir.settle(early_config, args)


def pytest_configure(config: pytest.Config) -> None:
    for name, text in GROUPS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    values = options.values_from(config.option)
    try:
        resolved = options.resolve(values)
    except ConfigError as err:
        raise pytest.UsageError(options.explain(err, "pytest")) from err
    config.stash[_STATE] = BurnIn(resolved)
    config.stash[_EXPLICIT_RESULTS] = values["results"] is not None
    config.stash[_PROGRESS] = (
        ProgressLines(lambda text: _write_live(config, text)) if config.get_verbosity() >= 0 else None
    )


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that do not apply to this run are not selected (so they do not count), unlike a skip:
    DCGM runs only when asked; the health test needs a GPU's NVML, or a simulated one."""
    chosen = config.stash[_STATE].options
    skipped = {
        "dcgm": chosen.dcgm_level is None,
        "health": chosen.device == "cpu" and not chosen.nvml.startswith("sim:"),
    }
    dropped = [item for item in items if skipped.get(group_of(item), False)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, Any, Any]:
    # Here rather than at collection_finish: this runs only once collection succeeded.
    config = session.config
    state = config.stash[_STATE]
    items = [(item.nodeid, group_of(item)) for item in session.items]
    if not config.option.collectonly and (any(group for _, group in items) or config.stash[_EXPLICIT_RESULTS]):
        try:
            state.start(items)
        except ConfigError as err:
            raise pytest.UsageError(options.explain(err, "pytest")) from err
        if threading.current_thread() is threading.main_thread():
            # A pod being stopped still gets its result file: SIGTERM ends the session as Ctrl-C does.
            config.stash[_SIGTERM] = signal.signal(signal.SIGTERM, _interrupt)
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
    progress = request.config.stash[_PROGRESS]
    return Recorder(state, request.node.nodeid, group, progress.for_test(group) if progress else None)


class Recorder:
    def __init__(
        self, state: BurnIn, test: str, group: str, on_progress: Callable[[Device, Progress], None] | None = None
    ):
        self._state = state
        self.test = test
        self.group = group
        self._on_progress = on_progress

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._state.devices

    @property
    def profile(self) -> Profile:
        return self._state.options.profile

    @property
    def scope(self) -> Scope:
        """What a device test runs on (harness.workers.devicetest)."""
        return dataclasses.replace(self._state.scope(self.test, self.group), on_progress=self._on_progress)

    def health(self) -> list[Finding]:
        """The health rules on a fresh snapshot; skips, saying why, when there is no health data."""
        watch = self._state.watch
        found = watch.judge(self.test) if watch is not None else None
        if found is None:
            pytest.skip(watch.unavailable if watch is not None else "no NVML on the CPU self-test")
        return found

    def dcgm(self, level: int) -> list[Finding]:
        """`dcgmi diag -r LEVEL`, its results as findings."""
        report = run_diag(level, timeout_s=DCGM_TIMEOUT_S[level])
        return dcgm_findings(report, {d.index: d.uuid for d in self.devices}, test=self.test)

    def record(self, outcome: Outcome) -> None:
        for m in outcome.measurements:
            if m.group != self.group or m.test != self.test:
                raise ValueError(f"{m.metric} from {m.test!r} recorded by {self.test} ({self.group})")
            if not math.isfinite(m.value):
                raise ValueError(f"{m.metric} of {m.gpu} is {m.value}: a figure must be a finite number")
        self._state.add(outcome)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    group = group_of(item)
    state = item.config.stash[_STATE]
    if group and state.active:
        state.before_test(item.nodeid, group)
    try:
        result = yield
    finally:
        if group and state.active:
            state.after_test(item.nodeid, group)
    if group and state.active:
        stopping = state.judge_test(item.nodeid, group)
        if stopping:  # a hang or a worker error is not a passed test either
            raise Judged("\n".join(f"{f.code}: {f.message}" for f in stopping), pytrace=False)
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
        judged = call.excinfo is not None and call.excinfo.errisinstance(Judged)
        state.on_report(
            item.nodeid, report.when, report.outcome, report.duration, summary_line, report.longreprtext, judged=judged
        )
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
    session.exitstatus = int(state.finish(_abnormal(exitstatus)).exit_code)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.active or state.verdict is None:
        return
    write = terminalreporter.write_line
    terminalreporter.section("gpu-burnin")
    for line in summary.table(state.assessments(), state.findings):
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
        if marker.name in GROUPS:
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


def _write_live(config: pytest.Config, text: str) -> None:
    """A line on the terminal now, in the middle of a test, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(text)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
