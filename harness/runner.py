"""`gpu-burnin run`: the suite in a child pytest process, under a watchdog.

The child writes the result file itself (gputests/plugin.py). This process makes
sure a verdict exists whatever happens to the child: if it runs past the time
limit, is killed, or exits without a finished result, the last checkpoint (or an
empty document) is finished here as incomplete, with a finding that says why. The
exit status is always the result file's verdict: 0 pass, 1 fail, 2 incomplete;
4 for a usage or configuration error, when nothing was run.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import results
from harness.devices import node_name
from harness.errors import ConfigError
from harness.records import Code, Finding, Remediation, Severity
from harness.verdict import ExitCode, decide

GRACE_S = 30.0
"""How long a child asked to stop may take to write its final result."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunRequest:
    device: str
    profile: str
    results: Path
    timeout_s: float
    duration: float | None = None
    markexpr: str | None = None
    baseline: Path | None = None
    baseline_dir: Path | None = None
    expect_gpus: int | None = None
    hang_timeout: float | None = None
    inject: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = ()


def pytest_argv(request: RunRequest, run_id: str) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "gputests.plugin", "-p", "no:cacheprovider", "--pyargs", "gputests"]
    argv += ["--gpu-device", request.device, "--gpu-profile", request.profile]
    argv += ["--gpu-results", str(request.results), "--gpu-run-id", run_id]
    optional = {
        "-m": request.markexpr,
        "--gpu-duration": request.duration,
        "--gpu-baseline": request.baseline,
        "--gpu-baseline-dir": request.baseline_dir,
        "--gpu-expect-gpus": request.expect_gpus,
        "--gpu-hang-timeout": request.hang_timeout,
    }
    for flag, value in optional.items():
        if value is not None:
            argv += [flag, str(value)]
    for fault in request.inject:
        argv += ["--gpu-inject", fault]
    return argv + list(request.pytest_args)


def run(request: RunRequest) -> int:
    run_id = results.new_run_id()
    started = results.utcnow()
    path = results.path_for(request.results, node_name(), run_id)
    results.ensure_directory(request.results)
    child = subprocess.Popen(pytest_argv(request, run_id), start_new_session=True)
    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        _signal_group(child, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = _wait(child, request.timeout_s, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code is None:
        _stop(child)
        return _abandon(
            path,
            run_id,
            started,
            request.device,
            Code.RUN_TIMEOUT,
            f"the run did not finish within --timeout {request.timeout_s:.0f} s and was killed",
        )
    if code == ExitCode.USAGE:
        return int(ExitCode.USAGE)
    return _settle(path, run_id, started, request.device, code, stopping)


def _wait(child: subprocess.Popen[bytes], timeout_s: float, stopping: list[int]) -> int | None:
    """The child's exit code, or None if it ran past the limit (or past the grace after a stop)."""
    try:
        return child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if not stopping:
            return None
    try:
        return child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        return None


def _settle(path: Path, run_id: str, started: Any, device: str, code: int, stopping: list[int]) -> int:
    try:
        document = results.load(path)
    except ConfigError:
        document = None
    if document is None or document.get("state") != results.FINISHED:
        why = f"signal {signal.Signals(stopping[0]).name}" if stopping else f"exit code {code}"
        return _abandon(
            path,
            run_id,
            started,
            device,
            Code.INTERRUPTED,
            f"the test process ended ({why}) before it wrote a final result",
        )
    verdict_code = int(document["verdict"]["exit_code"])
    if verdict_code != code:
        return _abandon(
            path,
            run_id,
            started,
            device,
            Code.INTERRUPTED,
            f"the test process exited {code} but its result says {document['verdict']['status']}",
        )
    return verdict_code


def _abandon(path: Path, run_id: str, started: Any, device: str, code: Code, message: str) -> int:
    """Finish a run that its test process could not finish: incomplete, or fail if it already found a failure."""
    try:
        document = results.load(path)
    except ConfigError:
        document = results.skeleton(run_id=run_id, node=node_name(), started_at=started, device_kind=device)
    finding = Finding(code=code, severity=Severity.INCOMPLETE, message=message, remediation=Remediation.RERUN)
    document["findings"].append(finding.to_dict())
    findings = [Finding.from_dict(f) for f in document["findings"]]
    outcomes = {t["nodeid"]: t["outcome"] for t in document.get("tests", [])}
    verdict = decide(findings, outcomes)
    document.update(state=results.ABANDONED, ended_at=results.timestamp(results.utcnow()), verdict=verdict.to_dict())
    try:
        results.write(path, document)
    except OSError as err:
        print(f"gpu-burnin: {message}; the result could not be written to {path}: {err}", file=sys.stderr)
        return int(ExitCode.INCOMPLETE) if verdict.exit_code == ExitCode.PASS else int(verdict.exit_code)
    print(f"gpu-burnin: {message}; verdict {verdict.status.upper()}; result: {path}", file=sys.stderr)
    return int(verdict.exit_code)


def _stop(child: subprocess.Popen[bytes]) -> None:
    _signal_group(child, signal.SIGTERM)
    try:
        child.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(child, signal.SIGKILL)  # workers too, whatever state the child left them in
    try:
        child.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass
