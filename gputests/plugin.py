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
import os
import signal
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest

from gputests import rootdir, summary
from gputests.progress import ProgressLines
from gputests.session import BurnIn
from harness import options
from harness.devices import Device
from harness.errors import ConfigError
from harness.groups import GROUPS, direction_of
from harness.nvml.dcgm import findings as dcgm_findings
from harness.nvml.dcgm import run_diag
from harness.profiles import Profile
from harness.records import Code, Finding
from harness.workers import Progress
from harness.workers.devicetest import Outcome, Scope

DCGM_TIMEOUT_S = {1: 300.0, 2: 900.0, 3: 3600.0, 4: 7200.0}
"""How long each dcgmi diag level may take: DCGM's own estimates, doubled."""
_STATE = pytest.StashKey[BurnIn]()
_EXPLICIT_RESULTS = pytest.StashKey[bool]()
_HANDLERS = pytest.StashKey[dict[int, Any]]()
"""The signal handlers this plugin replaced, to put back."""
_STOPPED_BY = pytest.StashKey[str]()
"""The signal that interrupted the run."""
_TESTS_OVER = pytest.StashKey[bool]()
"""The tests have ended: a signal now lets the result be finished."""
_PROGRESS = pytest.StashKey[ProgressLines | None]()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C, a pod's SIGTERM). A KeyboardInterrupt, so that no
    `except Exception` swallows it, and pytest ends the session as it does for Ctrl-C; its own
    name keeps pytest from printing its traceback hint: one line says what happened."""


class Judged(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """A burn-in test stopped by its own findings (a failure, a hang, a worker error), not by a bug."""


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_to_pytest(parser.getgroup("gpu", "gpu-burnin (GPU burn-in tests)"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # `--gpu-results DIR` moved pytest's rootdir before this plugin's options were known.
    rootdir.settle(early_config, args)


@pytest.hookimpl(trylast=True)  # after the other plugins and conftests have registered their markers
def pytest_configure(config: pytest.Config) -> None:
    for group in GROUPS.values():
        config.addinivalue_line("markers", f"{group.name}: {group.help}")
    values = options.values_from(config.option)
    registered = [line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")]
    try:
        internal = options.Internal.from_env(os.environ)  # set by a gpu-burnin command for its child
        values = {**values, **(internal.values() if internal else {})}
        resolved = options.resolve(values, markers=registered)
    except ConfigError as err:
        raise pytest.UsageError(options.explain(err, options.front_of(values.get("entrypoint")))) from err
    config.stash[_STATE] = BurnIn(resolved, parent_holds_lock=internal is not None)
    config.stash[_EXPLICIT_RESULTS] = values["results"] is not None
    config.stash[_PROGRESS] = (
        ProgressLines(lambda text: _write_live(config, text)) if config.get_verbosity() >= 0 else None
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    for signum, previous in config.stash.get(_HANDLERS, {}).items():
        signal.signal(signum, previous)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, pytest.CollectReport]:
    # A test module skipped or broken at import never becomes a test: it must not vanish from the verdict.
    report: pytest.CollectReport = yield
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
            raise pytest.UsageError(options.explain(err, state.options.front)) from err
        if threading.current_thread() is threading.main_thread():
            # A pod being stopped still gets its result file: SIGTERM ends the session as Ctrl-C does.
            handler = _interrupt(config)
            previous: dict[int, Any] = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
            config.stash[_HANDLERS] = previous
    try:
        return (yield)
    finally:
        config.stash[_TESTS_OVER] = True


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
    recorder = Recorder(state, request.node.nodeid, group, progress.for_test(group) if progress else None)
    request.node.stash[_RECORDER] = recorder  # for an interrupt: what the test had measured
    return recorder


class Recorder:
    def __init__(
        self, state: BurnIn, test: str, group: str, on_progress: Callable[[Device, Progress], None] | None = None
    ):
        self._state = state
        self.test = test
        self.group = group
        self._on_progress = on_progress
        self._live: list[Outcome] = []
        """The test's device runs' outcomes, as they fill in."""
        self._recorded: list[Outcome] = []

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._state.devices

    @property
    def profile(self) -> Profile:
        return self._state.options.profile

    @property
    def scope(self) -> Scope:
        """What a device test runs on (harness.workers.devicetest)."""
        return dataclasses.replace(
            self._state.scope(self.test, self.group), on_progress=self._on_progress, on_outcome=self._live.append
        )

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
        self._check(outcome)
        self._recorded.append(outcome)
        self._state.add(outcome)

    def unrecorded(self) -> list[Outcome]:
        """What the test's device runs had gathered and the test had not recorded yet (it was
        interrupted): figures that break the rules of `record` are left out."""
        kept = []
        for outcome in self._live:
            if any(outcome is done for done in self._recorded):
                continue
            try:
                self._check(outcome)
            except ValueError:
                continue
            kept.append(outcome)
        return kept

    def _check(self, outcome: Outcome) -> None:
        for m in outcome.measurements:
            if m.group != self.group or m.test != self.test:
                raise ValueError(f"{m.metric} from {m.test!r} recorded by {self.test} ({self.group})")
            if not math.isfinite(m.value):
                raise ValueError(f"{m.metric} of {m.gpu} is {m.value}: a figure must be a finite number")
            declared = direction_of(m.metric)
            if declared is None:
                raise ValueError(f"{m.metric} is no group's metric: declare it in its entry (harness.groups)")
            if m.direction is not declared:
                raise ValueError(f"{m.metric} is better {declared}, not {m.direction} (harness.groups)")


_RECORDER = pytest.StashKey[Recorder]()
"""A test's Recorder, kept on its item."""


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
    state = item.config.stash[_STATE]
    began = time.perf_counter()
    try:
        result = yield
    except KeyboardInterrupt:  # pytest reports nothing for a test it was running: say it was interrupted
        if state.active:
            recorder = item.stash.get(_RECORDER, None)
            kept = recorder.unrecorded() if recorder is not None else []
            state.interrupted(item.nodeid, group_of(item), time.perf_counter() - began, kept)
        raise
    if state.active:
        state.checkpoint()  # after every test, so a run killed later keeps what it measured
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None or not state.active or exitstatus == pytest.ExitCode.USAGE_ERROR:
        return
    stopped_by = session.config.stash.get(_STOPPED_BY, "")
    session.exitstatus = int(state.finish(_abnormal(exitstatus, stopped_by)).exit_code)


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


def _abnormal(exitstatus: int, stopped_by: str = "") -> tuple[Code, str] | None:
    """Why pytest's own exit status blocks a pass, if it does; `stopped_by`, the signal that stopped it."""
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        return None  # failures are judged test by test; no tests is judged by the verdict
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        by = f" by {stopped_by}" if stopped_by else ""
        return Code.INTERRUPTED, f"the run was interrupted{by} before it finished"
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


def _interrupt(config: pytest.Config) -> Callable[[int, Any], None]:
    """The handler of SIGINT and SIGTERM: the first ends the session, with the running test recorded
    as interrupted; a later one, or one once the tests are over, is ignored, so that the result file
    is still finished (the `gpu-burnin run` watchdog kills a run that does not stop in time)."""

    def interrupt(signum: int, frame: Any) -> None:
        if _STOPPED_BY in config.stash or config.stash.get(_TESTS_OVER, False):
            return
        config.stash[_STOPPED_BY] = name = signal.Signals(signum).name
        raise Interrupted(f"the run was interrupted by {name}")

    return interrupt
