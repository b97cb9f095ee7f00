"""The commands that meet a cluster: preflight (the DaemonSet), periodic (the CronJob),
retest and status (for a person).

preflight and periodic run the suite exactly as `gpu-burnin run` does, then act on
their own node only: preflight releases or holds it, periodic reports and, on a
failure, requests its take-out (the remediator decides). The result file is on
disk, whole, before anything on the node changes; the metrics file too. If the
node cannot be updated, the command exits non-zero
and the next attempt of preflight reuses the recent result on disk instead of
burning again.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import lock, options, outbox, results, runner, severity
from harness.devices import node_name
from harness.errors import ConfigError
from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import Api, KubeError, Patience, connect
from harness.kube.node import Marks, Outcome
from harness.options import RunOptions
from harness.records import Code, Severity
from harness.results import ResultDocument, RunState
from harness.terminal import printable
from harness.verdict import ExitCode, Status


@dataclasses.dataclass(frozen=True, kw_only=True)
class Access:
    """How to reach the API server."""

    kubeconfig: Path | None = None
    patience: Patience = Patience()

    def connect(self) -> Api:
        return connect(self.kubeconfig, patience=self.patience)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeCommand:
    """What preflight and periodic need besides the run options."""

    node: str
    access: Access
    marks: Marks
    fleet: actions.Fleet
    metrics_textfile: Path | None = None
    stay: bool = False
    """preflight in a DaemonSet: after acting, wait to be stopped instead of exiting (and being restarted)."""
    reuse_within_s: float = 3600.0
    """preflight: a result for this node this recent, from the same options, is acted on instead of burning again."""
    retries: int = 3
    """preflight: an incomplete run is burned again this many times (each a new run, its own result) before
    the node is marked incomplete for a person; a failure is never retried."""
    retry_wait_s: float = 60.0
    """preflight: the wait before the first retry, doubled for each next one, at most RETRY_WAIT_MAX_S."""


RETRIES_MAX = 10
RETRY_WAIT_MAX_S = 600.0


def node_from(given: str | None) -> str:
    name = given or os.environ.get("NODE_NAME", "")
    if not name:
        raise ConfigError("name the node: --node NAME, or NODE_NAME from the downward API", option="--node")
    return nodes.check_node_name(name, option="--node" if given else "NODE_NAME")


NODE_DEVICES = ("cuda",)
"""What preflight and periodic may burn: a node's verdict comes from its GPUs, never from the CPU
self-test (the project's own tests widen this in their process to drive the flows on a CPU)."""


class Stop:
    """SIGTERM and SIGINT, caught from the first line of a node agent on: in a container the process is PID 1,
    to which the kernel delivers no signal whose action is the default, so a SIGTERM that came before a
    handler was installed would be ignored and the pod (holding the node's GPUs) would live out its whole
    grace period. Caught, it is said, and the agent stops at the next step: before the burn, nothing is
    burned and nothing on the node changes; after acting, it exits instead of idling."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal = ""

    def install(self) -> Stop:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._caught)
        return self

    def _caught(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()

    @property
    def asked(self) -> bool:
        return self.event.is_set()


def preflight(
    command: NodeCommand, values: Mapping[str, Any], pytest_args: Sequence[str], timeout_s: float | None
) -> int:
    stop = Stop().install()  # first: a SIGTERM from here on is heard (the runner forwards its own during the burn)
    try:
        chosen, api = _prepare(command, values, "preflight")
    except KubeError as err:
        return _unreachable(command.node, err)
    if stop.asked:
        return _stopped_before(command.node, stop)
    attempts = command.retries + 1
    for attempt in range(attempts):
        if attempt:
            wait = min(command.retry_wait_s * 2 ** (attempt - 1), RETRY_WAIT_MAX_S)
            print(
                f"gpu-burnin: run {chosen.run_id} was incomplete; burning again in {wait:.0f} s "
                f"(attempt {attempt + 1} of {attempts}, --preflight-retries {command.retries})",
                flush=True,
            )
            if stop.event.wait(wait):
                return _stopped_before(command.node, stop, what="the next burn")
            chosen = dataclasses.replace(chosen, run_id=results.new_run_id())
        with lock.hold(chosen.results_dir, chosen.run_id):  # a second preflight of this node exits 4 here
            doc = None
            if attempt == 0:
                doc = find_reusable(chosen, command.node, within_s=command.reuse_within_s, now=results.utcnow())
            if doc is not None:
                print(f"gpu-burnin: acting on the recent result {doc.run_id} for this node instead of burning again")
            else:
                if stop.asked:
                    return _stopped_before(command.node, stop)
                record_preflight(chosen.results_dir, command.node, chosen.run_id)
                code, doc = _run(chosen, values, pytest_args, timeout_s)
                if doc is None:
                    return code
                if doc.verdict.status is Status.INCOMPLETE and attempt + 1 < attempts and not stop.asked:
                    continue  # the node is left pending (its label keeps this pod) until the last attempt
            _metrics(command, doc, chosen.results_dir)
            try:
                done = actions.preflight(api, command.node, outcome(doc), command.marks, results.utcnow())
            except KubeError as err:
                return _not_updated(command.node, doc, err)
        break
    else:  # every attempt continued: unreachable (the last attempt always acts)
        raise AssertionError("preflight: no attempt acted")
    print(f"gpu-burnin: {done.message}")
    return _stay(stop) if command.stay else done.exit_code


def _stopped_before(node: str, stop: Stop, *, what: str = "the burn") -> int:
    print(
        f"gpu-burnin: stopped by {stop.signal} before {what}: nothing was run, node {node} is left as it was",
        file=sys.stderr,
    )
    return int(ExitCode.INCOMPLETE)


def periodic(
    command: NodeCommand, values: Mapping[str, Any], pytest_args: Sequence[str], timeout_s: float | None
) -> int:
    try:
        chosen, api = _prepare(command, values, "periodic")
    except KubeError as err:
        return _unreachable(command.node, err)
    with lock.hold(chosen.results_dir, chosen.run_id):
        code, doc = _run(chosen, values, pytest_args, timeout_s)
        if doc is None:
            return code
        _metrics(command, doc, chosen.results_dir)
        try:
            done = actions.periodic(api, command.node, outcome(doc), command.marks, command.fleet, results.utcnow())
        except KubeError as err:
            return _not_updated(command.node, doc, err)
    print(f"gpu-burnin: {done.message}")
    return done.exit_code


def retest(node: str, access: Access, marks: Marks) -> int:
    api = access.connect()
    try:
        done = actions.retest(api, node, marks, results.utcnow())
    except KubeError as err:
        print(f"gpu-burnin: error: node {node} was not put back in preflight: {err}", file=sys.stderr)
        return int(ExitCode.INCOMPLETE)
    print(f"gpu-burnin: {done.message}")
    return done.exit_code


def status(access: Access, marks: Marks, fleet: actions.Fleet, pending_limit_s: float, as_json: bool) -> int:
    api = access.connect()
    try:
        found = actions.status(api, marks, fleet, pending_limit_s=pending_limit_s, now=results.utcnow())
    except KubeError as err:
        print(f"gpu-burnin: error: {err}", file=sys.stderr)
        return int(ExitCode.INCOMPLETE)
    if as_json:
        print(json.dumps([s.to_dict() for s in found], indent=1))
        return int(ExitCode.PASS)
    for line in status_table(found, pending_limit_s):
        print(line)
    return int(ExitCode.PASS)


def status_table(found: Sequence[actions.NodeState], pending_limit_s: float) -> list[str]:
    if not found:
        return ["no GPU nodes match the selector"]
    rows: list[tuple[str, ...]] = [("node", "state", "for", "gpus", "last run", "findings", "")]
    for s in found:
        note = f"STUCK: pending over {_duration(pending_limit_s)}" if s.stuck else ""
        note = f"{note}: {s.why}" if note and s.why else note or s.why
        cells = (s.name, s.state, _duration(s.for_s), s.gpus, s.run_id or "-", ",".join(s.codes) or "-", note)
        rows.append(tuple(printable(cell) for cell in cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    counts: dict[str, int] = {}
    for s in found:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append("")
    lines.append(", ".join(f"{n} {printable(state)}" for state, n in counts.items()) + f"; {len(found)} GPU nodes")
    return lines


def find_reusable(chosen: RunOptions, node: str, *, within_s: float, now: dt.datetime) -> ResultDocument | None:
    """The node's newest result, if it is the result of this node's own last preflight (the run id
    `record_preflight` kept before that burn), decided, recent and from the same options and
    baselines. Only the newest counts: a newer result of any kind (a periodic failure, a run by
    hand, one that cannot be read) supersedes every older pass."""
    if within_s <= 0 or not chosen.results_dir.is_dir():
        return None
    recorded = recorded_preflight(chosen.results_dir, node)
    for path in sorted(chosen.results_dir.glob(results.node_pattern(node)), reverse=True):  # newest run id first
        try:
            doc = results.load(path)
        except ConfigError:
            return None  # unreadable: it may be newer than any pass; burn again
        if doc.node != node:
            continue  # another node whose name shares this file-name prefix
        if doc.run_id != recorded or doc.entrypoint != "preflight":
            return None  # not this node's own last preflight: a hand-made or forged result is never reused
        if doc.state is RunState.RUNNING or interrupted(doc):
            return None
        same = (
            doc.device_kind == chosen.device
            and doc.selection == chosen.selection
            and doc.faults == [str(f) for f in chosen.faults]
            and doc.profile is not None
            and doc.profile.name == chosen.profile.name
            and _same_baselines(doc, chosen)
        )
        ended = doc.ended_at or doc.started_at
        return doc if same and 0 <= (now - ended).total_seconds() <= within_s else None
    return None


PREFLIGHT_RECORD = ".preflight-{node}.state"
"""Beside the results: the run id of this node's last preflight burn, written before it starts."""


def record_preflight(directory: Path, node: str, run_id: str) -> None:
    """Keep this preflight's run id before it burns: only a result with it may be reused later."""
    results.write_json(_record_path(directory, node), {"node": node, "run_id": run_id})


def recorded_preflight(directory: Path, node: str) -> str:
    """The run id of this node's last preflight burn, or "" when none was recorded (or it is unreadable)."""
    try:
        data = json.loads(_record_path(directory, node).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(data, dict) or data.get("node") != node:
        return ""
    return str(data.get("run_id", ""))


def _record_path(directory: Path, node: str) -> Path:
    return directory / PREFLIGHT_RECORD.format(node=results.file_part(node))


def _same_baselines(doc: ResultDocument, chosen: RunOptions) -> bool:
    """Whether the baselines that would judge this node now are the ones that judged the result."""
    on_node = collections.Counter((d.kind, d.name) for d in doc.devices)
    try:
        found = (chosen.baselines.for_device(d.kind, d.name, on_node[(d.kind, d.name)]) for d in doc.devices)
        now = {b.sha256 for b in found if b is not None}
    except ConfigError:
        return False
    return now == {b.sha256 for b in doc.baselines}


def interrupted(doc: ResultDocument) -> bool:
    """Cut short (a signal, a test process that died): not a result to act on again later."""
    return any(f.code is Code.INTERRUPTED for f in doc.findings)


def outcome(doc: ResultDocument) -> Outcome:
    deciding = [f for f in doc.findings if f.severity in (Severity.FAIL, Severity.INCOMPLETE)]
    deciding.sort(key=lambda f: (f.severity is not Severity.FAIL, f.code == "FAULT_INJECTED"))
    codes = list(dict.fromkeys(str(f.code) for f in deciding))
    remediation = str(deciding[0].remediation) if deciding else ""
    return actions.outcome_of(
        doc.run_id,
        str(doc.verdict.status),
        doc.verdict.reasons,
        codes,
        remediation,
        doc.ended_at or doc.started_at,
        doc.entrypoint,
        critical=severity.any_critical(deciding),
    )


def _prepare(command: NodeCommand, values: Mapping[str, Any], entrypoint: str) -> tuple[RunOptions, Api]:
    """Everything checked, and the node read, before anything runs: a bad option, a node that does
    not exist or that this identity may not read is exit 4, an API server out of reach exit 2,
    with the GPUs untouched."""
    os.environ["NODE_NAME"] = command.node  # the result file and the child's records name this node
    chosen = options.resolve({**values, "entrypoint": entrypoint})
    if chosen.device not in NODE_DEVICES:
        raise ConfigError(
            f"{entrypoint} decides about a GPU node from its GPUs: it runs with --device cuda only "
            "(the CPU self-test is gpu-burnin run --device cpu)",
            option="device",
        )
    if chosen.nvml != "real":
        raise ConfigError("a simulated NVML cannot decide about a real node; use it with gpu-burnin run", option="nvml")
    api = command.access.connect()
    node = actions.read_node(api, command.node)
    chosen = dataclasses.replace(chosen, gpu_node=nodes.has_gpus(node))
    options.check_fault_devices(chosen)
    results.ensure_directory(chosen.results_dir)  # the burn lock lives there
    return chosen, api


def _run(
    chosen: RunOptions, values: Mapping[str, Any], pytest_args: Sequence[str], timeout_s: float | None
) -> tuple[int, ResultDocument | None]:
    """Run the suite (the caller holds the node's burn lock); its result, or None when there is
    nothing to act on (a usage error, or this process asked to stop: a run cut short by a pod's
    deletion says nothing about the node)."""
    child = {**values, "results": chosen.results_dir}
    request = runner.RunRequest(
        options=chosen,
        argv=tuple(runner.pytest_argv(child, pytest_args)),
        timeout_s=timeout_s or options.default_timeout(chosen),
        lock_held=True,
    )
    ended = runner.run_for(request)
    code = ended.code
    if code == ExitCode.USAGE:
        return code, None
    if ended.stopped_by:
        print(f"gpu-burnin: stopped by {ended.stopped_by} during the run; the node is left as it was", file=sys.stderr)
        return int(ExitCode.INCOMPLETE), None
    path = results.path_for(chosen.results_dir, node_name(), chosen.run_id)
    try:
        doc = results.load(path)
    except ConfigError as err:  # the watchdog always leaves a file; if not, nothing may change on the node
        print(f"gpu-burnin: error: no result to act on: {err}", file=sys.stderr)
        return int(ExitCode.INCOMPLETE), None
    return code, doc


def _metrics(command: NodeCommand, doc: ResultDocument, results_dir: Path) -> None:
    if command.metrics_textfile is None:
        return
    from harness import metrics  # prometheus_client: only where a metrics file is written

    try:
        metrics.write(command.metrics_textfile, doc, outbox=outbox.waiting(results_dir))
    except ConfigError as err:  # the node's verdict does not depend on its metrics
        print(f"gpu-burnin: warning: {options.explain(err, 'cli')}", file=sys.stderr)


def _unreachable(node: str, err: KubeError) -> int:
    print(f"gpu-burnin: error: node {node} could not be read before the burn: {err}; nothing was run", file=sys.stderr)
    return int(ExitCode.INCOMPLETE)


def _not_updated(node: str, doc: ResultDocument, err: KubeError) -> int:
    print(
        f"gpu-burnin: error: node {node} was not updated: {err}. The result {doc.run_id} ({doc.verdict.status}) is on "
        "disk; the next attempt acts on it without burning again",
        file=sys.stderr,
    )
    return int(ExitCode.INCOMPLETE) if doc.verdict.status is Status.PASS else int(doc.verdict.exit_code)


def _stay(stop: Stop) -> int:
    """Idle until stopped (at once when asked already): the DaemonSet deletes this pod once the node's label
    no longer selects it."""
    stop.install()  # again: the runner put back what it found, but be sure
    print("gpu-burnin: done; waiting to be stopped", flush=True)
    while not stop.event.wait(3600):
        pass
    return int(ExitCode.PASS)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
