"""`gpu-burnin run`: the suite in a child pytest process, under a watchdog.

The child writes the result file itself (gputests/plugin.py). This process makes
sure a verdict exists whatever happens to the child: if it runs past the time
limit, is killed, or exits without a finished result, the last checkpoint (or an
empty document) is finished here as incomplete, with a finding that says why. The
exit status is always the result file's verdict: 0 pass, 1 fail, 2 incomplete;
4 for a usage or configuration error, when nothing was run.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from harness import lock, options, outbox, results
from harness.devices import node_name
from harness.errors import ConfigError
from harness.options import RunOptions
from harness.records import Code, Finding, Remediation, Severity
from harness.results import ResultDocument, RunState
from harness.verdict import ExitCode, decide

PR_SET_PDEATHSIG = 1
GRACE_S = 20.0
"""How long a child asked to stop may take to write its final result: inside Kubernetes'
default 30 s termination grace, with time left to finish the file here."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunRequest:
    options: RunOptions
    """The run's options, resolved and checked by the command line."""
    argv: tuple[str, ...]
    """The child pytest process's command line (`pytest_argv`)."""
    timeout_s: float
    json: bool = False
    """Print the final result document on stdout; the child's output goes to stderr."""
    lock_held: bool = False
    """The caller already holds the node's burn lock (preflight, periodic: for the burn and the node
    update together); otherwise the run takes it for itself."""


def pytest_argv(values: Mapping[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """The child's command line: the suite, the run options as pytest flags, then `extra` unchanged."""
    argv = [sys.executable, "-m", "pytest", "-p", "gputests.plugin", "-p", "no:cacheprovider", "--pyargs", "gputests"]
    return argv + options.child_argv(values) + list(extra)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the watchdog needs to finish a run's result file itself."""

    path: Path
    run_id: str
    started: dt.datetime
    device: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ended:
    code: int
    """The verdict's exit code, or 4 for a usage error."""
    stopped_by: str = ""
    """The signal that asked this process to stop during the run (SIGTERM from a pod's deletion), or ""."""


def run(request: RunRequest) -> int:
    """Run the suite; the verdict's exit code."""
    return run_for(request).code


def run_for(request: RunRequest) -> Ended:
    """Run the suite; how it ended, and whether this process was asked to stop meanwhile."""
    from harness.distributed import launched_by_mpi  # torch, as the child imports anyway

    chosen = request.options
    if launched_by_mpi():
        raise ConfigError(
            "started by an MPI launcher: run the suite itself in each MPI process, "
            "mpiexec ... python -m pytest --pyargs gputests -m nccl (docs/interconnect.md)"
        )
    path = results.path_for(chosen.results_dir, node_name(), chosen.run_id)
    results.ensure_directory(chosen.results_dir)
    with contextlib.ExitStack() as held:
        if not request.lock_held:
            held.enter_context(lock.hold(chosen.results_dir, chosen.run_id))
        ended = _watch_over(request, _Run(path, chosen.run_id, results.utcnow(), chosen.device))
        if chosen.results_url and ended.code != ExitCode.USAGE:  # the file is final: now the store, bounded
            url, stopped = chosen.results_url, bool(ended.stopped_by)
            outbox.deliver(chosen.results_dir, node_name(), chosen.run_id, url, send=not stopped)
        return ended


def _watch_over(request: RunRequest, this: _Run) -> Ended:
    chosen = request.options
    internal = options.Internal(run_id=chosen.run_id, entrypoint=chosen.entrypoint, gpu_node=chosen.gpu_node)
    as_json = request.json or _DOCUMENTS.stream is not None
    child = subprocess.Popen(
        list(request.argv),
        start_new_session=True,
        stdout=sys.stderr if as_json else None,
        preexec_fn=_die_with(os.getpid()),
        env={**os.environ, **internal.to_env()},
    )
    stopping: list[tuple[int, float]] = []

    def forward(signum: int, frame: Any) -> None:
        # The same signal, to the test process alone: it stops its own workers, records the test it
        # was running as interrupted, and says which signal it was. Once: past the grace, _stop kills.
        stopping.append((signum, time.monotonic()))
        if len(stopping) == 1:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = _wait(child, request.timeout_s, stopping)
        if code is None:
            _stop(child, already_asked=bool(stopping))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code is None and stopping:
        why = f"the test process did not stop within {GRACE_S:.0f} s of {signal.Signals(stopping[0][0]).name}"
        verdict = _abandon(this, Code.INTERRUPTED, why)
    elif code is None:
        verdict = _abandon(this, Code.RUN_TIMEOUT, f"the run did not finish within --timeout {request.timeout_s:.0f} s")
    elif code == ExitCode.USAGE:
        if this.path.exists():  # a usage error after the run had started: its file must not stay "running"
            _abandon(this, Code.INTERRUPTED, "the test process reported a usage error after the run had started")
        return Ended(code=int(ExitCode.USAGE))
    else:
        verdict = _settle(this, code, stopping)
    if as_json:
        _print_document(this.path)
    return Ended(code=verdict, stopped_by=signal.Signals(stopping[0][0]).name if stopping else "")


def _wait(child: subprocess.Popen[bytes], timeout_s: float, stopping: list[tuple[int, float]]) -> int | None:
    """The child's exit code, or None past the time limit, or past the grace after a stop signal."""
    deadline = time.monotonic() + timeout_s
    while True:
        limit = min(deadline, stopping[0][1] + GRACE_S) if stopping else deadline
        remaining = limit - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return child.wait(timeout=min(remaining, 0.5))
        except subprocess.TimeoutExpired:
            continue


def _settle(this: _Run, code: int, stopping: list[tuple[int, float]]) -> int:
    try:
        document: ResultDocument | None = results.load(this.path)
    except ConfigError:
        document = None
    if document is None or document.state is not RunState.FINISHED:
        why = f"signal {signal.Signals(stopping[0][0]).name}" if stopping else f"exit code {code}"
        return _abandon(this, Code.INTERRUPTED, f"the test process ended ({why}) before it wrote a final result")
    verdict_code = int(document.verdict.exit_code)
    if verdict_code != code:
        why = f"the test process exited {code} but its result says {document.verdict.status}"
        return _abandon(this, Code.INTERRUPTED, why)
    return verdict_code


def _abandon(this: _Run, code: Code, message: str) -> int:
    """Finish a run its test process could not: incomplete, or fail if it had already found a failure."""
    try:
        document = results.load(this.path)
    except ConfigError:
        document = ResultDocument(
            run_id=this.run_id, node=node_name(), started_at=this.started, device_kind=this.device
        )
    document.findings.append(
        Finding(code=code, severity=Severity.INCOMPLETE, message=message, remediation=Remediation.RERUN)
    )
    verdict = decide(document.findings, document.outcomes())
    document.state, document.ended_at, document.verdict = RunState.ABANDONED, results.utcnow(), verdict
    try:
        results.write(this.path, document)
    except OSError as err:
        print(f"gpu-burnin: {message}; the result could not be written to {this.path}: {err}", file=sys.stderr)
        return int(ExitCode.INCOMPLETE) if verdict.exit_code == ExitCode.PASS else int(verdict.exit_code)
    print(f"gpu-burnin: {message}; verdict {verdict.status.upper()}; result: {this.path}", file=sys.stderr)
    return int(verdict.exit_code)


@dataclasses.dataclass
class _Documents:
    stream: TextIO | None = None
    """Where result documents go while `documents_on_stdout` holds: the stdout it found."""


_DOCUMENTS = _Documents()


@contextlib.contextmanager
def documents_on_stdout(wanted: bool = True) -> Iterator[None]:
    """While it holds (when `wanted`): stdout carries the run's result document, as one JSON line, and
    nothing else; every other line printed here, and the test process's output, goes to stderr.
    For the log pipelines (Fluent Bit, Vector) of preflight and periodic: `--json`."""
    if not wanted:
        yield
        return
    _DOCUMENTS.stream = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _DOCUMENTS.stream = None


def _print_document(path: Path) -> None:
    """The result document as one JSON line, in the file's own order."""
    stream = _DOCUMENTS.stream or sys.stdout
    try:
        line = json.dumps(json.loads(path.read_text(encoding="utf-8")), separators=(",", ":"))
    except OSError as err:
        line = json.dumps({"error": f"{path}: {err.strerror}"})
    except ValueError as err:
        line = json.dumps({"error": f"{path}: not a JSON document: {err}"})
    print(line, file=stream, flush=True)


def _die_with(parent: int) -> Callable[[], None]:
    """For the child, before it starts: die when this process dies, even of SIGKILL, so a
    killed `gpu-burnin run` leaves nothing burning and nothing writing results later."""

    def arrange() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # not Linux: the watchdog's own signals still apply
            return
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arrange


def _stop(child: subprocess.Popen[bytes], *, already_asked: bool) -> None:
    """End the child and its workers: SIGTERM first unless it was already asked, then SIGKILL."""
    if not already_asked:
        _signal_group(child, signal.SIGTERM)
        try:
            child.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(child, signal.SIGKILL)  # workers too, whatever state the child left them in
    try:
        child.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass
