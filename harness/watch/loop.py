"""The watch's loop: read NVML, judge, decide, journal, act, export; every `--interval`.

Time comes from an injectable clock (seconds, monotonic: it runs on across a restart
within a boot, as CLOCK_MONOTONIC does) and wall clock, so the soak test drives hours
in seconds. NVML is called on a thread of its own with a time limit: a driver wedged
after an Xid 79 answers nothing. The watch never exits for NVML: missing (no driver
mounted, no library), failing to start or wedged, the node's condition says `Unknown`
(reason NvmlUnavailable, with the error) and the watch tries again with a bounded
exponential back-off; a call still hung is never doubled (one NVML thread at a time).
A new container on a node with a GPU in error may not be created at all, so the watch
must already be running when it happens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from harness import results
from harness.baselines import BaselineSet
from harness.errors import ConfigError
from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import KubeError
from harness.nvml import read, xid_table
from harness.nvml.monitor import NvmlXid
from harness.nvml.snapshot import Snapshot
from harness.records import NODE, Code, Finding, Remediation, Severity
from harness.results import RunState
from harness.verdict import ExitCode, Status
from harness.watch import act, flap, judge
from harness.watch import metrics as watch_metrics
from harness.watch.config import WatchConfig
from harness.watch.flap import Decision, Tracker
from harness.watch.journal import ASIDE, Entry, Journal
from harness.watch.log import DONE, FAILED, Log

T = TypeVar("T")


NVML_RETRY_MAX_S = 600.0
"""The longest wait between tries to start NVML again."""


class Wedged(Exception):
    """NVML did not answer within --nvml-timeout (or a call that did not is still hung)."""


@dataclasses.dataclass
class Stats:
    """For the metrics: how the watch itself is doing."""

    polls: int = 0
    nvml_errors: int = 0
    api_errors: int = 0
    actions: dict[str, int] = dataclasses.field(default_factory=dict)
    xids: dict[tuple[str, int], int] = dataclasses.field(default_factory=dict)
    last_xid: dict[str, int] = dataclasses.field(default_factory=dict)


class Watch:
    def __init__(
        self,
        config: WatchConfig,
        *,
        nv: Any,
        writer: act.NodeWriter,
        baselines: BaselineSet,
        table: xid_table.XidTable,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        log: TextIO = sys.stderr,
    ):
        self.config = config
        self.nv = nv
        self.writer = writer
        self.clock = clock
        self.wall = wall
        self.log = log
        self.say = Log(log, config.node)
        """The log's lines: every finding's course and every action, none for a quiet poll."""
        self.journal = Journal(config.journal, config.boot_id)
        self.judge = judge.Judge(
            baselines,
            table,
            window_s=config.window_s,
            load_samples=config.load_samples,
            delta_window_s=config.delta_window_s,
        )
        self.tracker = Tracker(config)
        self.stats = Stats()
        self.snapshot: Snapshot | None = None
        self.origin = config.timeline_origin
        self._events: Any = None
        self._handles: dict[Any, tuple[str, str]] = {}
        self._doing = ""
        self.last_poll: dt.datetime | None = None
        self.unreadable: str | None = None
        """Why NVML cannot be read now (missing, failing to start, wedged): the condition says Unknown."""
        self._started = False
        """NVML answered once: the GPUs are known (the judge started)."""
        self._retry_at = 0.0
        self._retry_wait = 0.0
        self._shown_unreadable: str | None = None
        """What the condition on the node says of NVML, as last written."""
        self._hung: threading.Event | None = None
        """Set when the NVML call that did not answer in time returns at last."""
        """The action whose API calls are being made: a failure is said as its."""

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Journal, NVML, the GPUs, the node; the condition written unless the node shows it already.
        NVML missing or wedged leaves the watch running, `Unknown`, to try again. Raises ConfigError
        (journal, baselines) or KubeError (the node)."""
        self.journal.open(t=self.clock(), now=self.wall())
        for warning in self.journal.warnings:
            self.say.line(f"warning: {warning}")
        if self.origin is None:
            self.origin = self.clock()
        self.tracker.restore(self.journal.entries, self.journal.open_actions())
        self._connect()
        self.say.restored(self.tracker.open())
        self.writer.read()
        self._expect()
        self._announce_aside()
        self.writer.condition(self._wanted(), self.wall())  # a restart of a quiet watch writes nothing
        self._freshen()
        self._shown_unreadable = self.unreadable

    def _connect(self) -> bool:
        """Start NVML and learn the GPUs (once); False, with `unreadable` set and the next try scheduled,
        when it cannot (NVMLError, or no answer within --nvml-timeout)."""
        try:
            self._nvml(self.nv.nvmlInit)
            first = self._nvml(self._snapshot)
            if not self._started:
                self._learn(first)
            if self._events is None:
                self._nvml(self._listen)
        except Wedged as err:
            return self._failed(str(err))
        except Exception as err:  # noqa: BLE001 - NVMLError (no library, no driver, no GPU): unreadable
            if not isinstance(err, self.nv.NVMLError):
                raise
            return self._failed(f"NVML could not start: {err}")
        if not self._started and self.writer.node:
            self._expect()
        self._started = True
        if self.unreadable is not None:
            self.say.line(f"NVML answers again: watching {len(self.judge.devices)} GPUs")
        self.unreadable = None
        self._retry_wait = 0.0
        return True

    def _learn(self, first: Snapshot) -> None:
        remembered = [g for entry in self.journal.entries if entry.op == "start" for g in entry.data.get("gpus", ())]
        self.judge.start(first, remembered)
        self.say.devices = {d.uuid: d for d in self.judge.devices}
        seen = {str(d.get("uuid")) for d in remembered}
        if {d.uuid for d in self.judge.devices} - seen:
            self.journal.note("start", self.clock(), self.wall(), gpus=[_gpu_dict(d) for d in self.judge.devices])

    def _expect(self) -> None:
        """How many GPUs the node should have, when its GPU feature discovery label says (read with the node)."""
        count = actions.expected_gpus(self.writer.node)
        self.judge.expect(count, f"{actions.GPU_COUNT_LABEL}={count}")

    def _failed(self, why: str) -> bool:
        """NVML cannot be read: say so (once, until it changes state), and try again after a back-off that
        doubles from --interval up to NVML_RETRY_MAX_S."""
        self.stats.nvml_errors += 1
        if self.unreadable is None:
            self.say.line(f"{why}; the condition says Unknown, and the watch tries again")
            self.unreadable = why
        self._retry_wait = min(max(self._retry_wait * 2, self.config.interval_s), NVML_RETRY_MAX_S)
        self._retry_at = self.clock() + self._retry_wait
        return False

    def _announce_aside(self) -> None:
        """A journal moved aside at open is said on the node, once (journaled: a failed Event is retried at
        the next start). Raises KubeError."""
        for begun in self.journal.open_actions():
            if begun.op == ASIDE:
                reason, moved = begun.data.get("reason", ""), begun.data.get("moved_to", "")
                message = (
                    f"the watch's journal could not be read ({reason}): moved aside to {moved} on the node, and a "
                    "new one begun; findings open before are judged afresh"
                )
                self.writer.event(act.EVENT_JOURNAL, message, self.wall(), key=f"{begun.id}/{begun.time}")
                self.journal.done(begun, self.clock(), self.wall())
                self.say.line(f"warning: said on the node (Event {act.EVENT_JOURNAL}): the journal moved aside")

    # -- one poll --------------------------------------------------------------------------------

    def poll(self) -> list[Decision]:
        """Read, judge, act. An API error leaves the decision for the next poll; NVML that cannot be read
        (missing, wedged) is said on the node, `Unknown`, and tried again with back-off."""
        t = self.clock()
        self.stats.polls += 1
        if self.unreadable is not None:
            if t < self._retry_at or not self._connect():
                self._show_unreadable()
                self._polled()
                self._export(t)
                return []
        findings: list[Finding]
        xids: list[NvmlXid] = []
        read = True
        try:
            snapshot = self._nvml(self._snapshot)
            xids = self._nvml(self._drain)
            self.snapshot = snapshot
            findings = self.judge.judge(snapshot, xids, t)
        except Wedged as err:  # no answer: unknown until NVML answers again (back-off)
            self._failed(str(err))
            self._show_unreadable()
            self._polled()
            self._export(t)
            return []
        except self.nv.NVMLError as err:  # unknown is not healthy: what is open stays open
            self.stats.nvml_errors += 1
            findings, read = [_unavailable(f"NVML query failed: {err}")], False
        self._count(xids)
        decisions = self.tracker.observe(findings, t, complete=read)
        self.say.notes(self.tracker.notes, t)
        for decision in decisions:
            self.say.decided(decision)
            self._doing = decision.op
            try:
                self._carry_out(decision, t)
            except KubeError as err:
                self.stats.api_errors += 1
                self.say.acted(self._doing, decision.tracks, FAILED, f"tried again at the next poll: {err}")
                break  # in order: a later decision may rest on this one
        self._show_unreadable()
        self._freshen()
        self._polled()
        self._export(t)
        return decisions

    def _freshen(self) -> None:
        """The freshness label on this node: present (`true`) while its newest finished pass or fail is
        younger than --retest-after, absent otherwise; written only when that changes."""
        if self.config.results_dir is None:
            return
        newest = newest_result(self.config.results_dir, self.config.node)
        age = None if newest is None else self.wall().timestamp() - newest
        fresh = age is not None and age < self.config.retest_after_s
        label = self.writer.marks.fresh
        want = label.value if fresh else None
        if nodes.labels_of(self.writer.node).get(label.key) == want:
            return
        try:
            self.writer.node = actions.update(
                self.writer.api,
                self.writer.name,
                lambda n: nodes.patch(n, set_labels={label.key: want}),
                read=self.writer.node,
            )
        except KubeError as err:
            self.stats.api_errors += 1
            self.say.line(f"the freshness label was not written (tried again at the next poll): {err}")
            return
        said = f"{label.key}={label.value}" if fresh else f"{label.key} removed"
        self.say.line(f"{said}: the newest result is {'from ' + _ago(age) if age is not None else 'none'}")

    def _export(self, t: float) -> None:
        if self.config.metrics_textfile is not None:
            watch_metrics.write(self.config.metrics_textfile, self, t)

    def _show_unreadable(self) -> None:
        """When NVML turns unreadable or readable again, the condition says so (written only then; a failed
        write is tried again at the next poll)."""
        if self.unreadable == self._shown_unreadable:
            return
        try:
            self.writer.condition(self._wanted(), self.wall())
        except KubeError as err:
            self.stats.api_errors += 1
            self.say.line(f"the condition was not written (tried again at the next poll): {err}")
            return
        self._shown_unreadable = self.unreadable

    def _polled(self) -> None:
        """The poll's time, in the last-poll file the pod's readiness probe reads (`gpu-burnin watch-ready`):
        the watch's liveness costs the API server nothing."""
        self.last_poll = self.wall()
        try:
            write_last_poll(self.config.last_poll, self.last_poll)
        except OSError as err:
            self.say.line(f"warning: the last-poll file was not written: {err}")

    # -- acting ----------------------------------------------------------------------------------

    def _carry_out(self, decision: Decision, t: float) -> None:
        op, now = decision.op, self.wall()
        begun = self._open(op, decision) or self._begin(op, decision, t)
        key = f"{begun.id}/{begun.time}"
        if op == flap.Op.REQUEST:
            failing = [track.finding for track in decision.tracks]
            asked = nodes.parse_stamp(begun.time) or now
            health = self.writer.request(failing, self._wanted(decision), now, key, asked)
            self._done(begun, decision, t)
            self.say.acted(op, decision.tracks, DONE, f"{self.writer.marks.unhealthy_label.key}={health}")
            return
        self.writer.condition(self._wanted(decision), now)
        messages = "; ".join(track.finding.message for track in decision.tracks)
        if op == flap.Op.RECORD:
            self.writer.event(act.EVENT_RECORD, messages, now, key=key)
        elif op == flap.Op.CLEAR:
            said = f"cleared (the node stays as it is): {messages}"
            self.writer.event(act.EVENT_CLEARED, said, now, key=key, warning=False)
        self._done(begun, decision, t)
        if op == flap.Op.CLEAR:
            self.say.cleared(decision.tracks, self.config.hold, self.config.xid_clear_s)
        else:
            self.say.acted(op, decision.tracks, DONE)

    def _begin(self, op: str, decision: Decision, t: float, **data: Any) -> Entry:
        return self.journal.begin(
            op,
            decision.keys,
            t,
            self.wall(),
            findings=[track.finding.to_dict() for track in decision.tracks],
            actions={track.key: track.action for track in decision.tracks},
            **data,
        )

    def _open(self, op: str, decision: Decision) -> Entry | None:
        """This action, begun and not finished (a failed call, a restart): it goes on under the same entry,
        so a retry adds no line and its Event, named by the entry, is not posted twice."""
        return next((e for e in self.journal.open_actions() if e.op == op and e.keys == decision.keys), None)

    def _done(self, begun: Entry, decision: Decision, t: float) -> None:
        self.journal.done(begun, self.clock(), self.wall())
        self.tracker.mark(decision)
        self._counted(decision.op)

    def _counted(self, op: str) -> None:
        self.stats.actions[op] = self.stats.actions.get(op, 0) + 1

    def _shown(self, decision: Decision | None = None) -> list[act.Shown]:
        """What the node is to show once `decision` is carried out."""
        tracks = {track.key: track for track in self.tracker.open()}
        if decision is not None:
            for track in decision.tracks:
                if decision.op == flap.Op.CLEAR:
                    tracks.pop(track.key, None)
                else:
                    tracks[track.key] = track
        return [act.Shown(track.finding) for _, track in sorted(tracks.items())]

    def _wanted(self, decision: Decision | None = None) -> tuple[str, str, str]:
        shown = self._shown(decision)
        if self.unreadable is not None:
            shown.append(act.Shown(_unavailable(self.unreadable)))
        return act.condition_for(shown, len(self.judge.devices))

    # -- NVML --------------------------------------------------------------------------------------

    def _nvml(self, call: Callable[[], T]) -> T:
        """`call` on a thread of its own, within --nvml-timeout. While an earlier call that did not answer is
        still hung, no other is made (Wedged at once): a wedged driver holds one thread, not one a poll."""
        if self._hung is not None and not self._hung.is_set():
            raise Wedged(f"NVML still has not answered a call made over {self.config.nvml_timeout_s:g} s ago")
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = call()
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread as it is
                box["error"] = err
            finally:
                done.set()

        threading.Thread(target=run, name="gpu-burnin-nvml", daemon=True).start()
        if not done.wait(self.config.nvml_timeout_s):
            self._hung = done
            raise Wedged(f"NVML did not answer within {self.config.nvml_timeout_s:g} s: a wedged driver?")
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    def _snapshot(self) -> Snapshot:
        self.nv.follow_clock(self.clock() - (self.origin or 0.0))  # a simulation's timeline runs on our clock
        source = "nvml" if self.config.nvml == "real" else self.config.nvml
        return read.snapshot(self.nv, source)

    def _listen(self) -> None:
        nv = self.nv
        try:
            self._events = nv.nvmlEventSetCreate()
        except nv.NVMLError as err:
            self.say.line(f"warning: no NVML event set ({err}): Xids go unseen")
            return
        for index in range(nv.nvmlDeviceGetCount()):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                self._handles[read.handle_key(handle)] = (read.text(nv.nvmlDeviceGetUUID(handle)), _pci(nv, handle))
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._events)
            except nv.NVMLError:
                continue  # no event support on this GPU (some vGPU, MIG setups)

    def _drain(self) -> list[NvmlXid]:
        nv, found = self.nv, list[NvmlXid]()
        if self._events is None:
            return []
        while True:
            try:
                data = nv.nvmlEventSetWait_v2(self._events, 0)
            except nv.NVMLError:
                return found  # a timeout: nothing more waiting
            uuid, pci = self._handles.get(read.handle_key(data.device), ("", ""))
            found.append(NvmlXid(uuid=uuid, pci_bus_id=pci, xid=int(data.eventData), when=self.wall()))

    def _count(self, xids: list[NvmlXid]) -> None:
        for event in xids:
            gpu = event.uuid or event.pci_bus_id
            self.stats.xids[(gpu, event.xid)] = self.stats.xids.get((gpu, event.xid), 0) + 1
            self.stats.last_xid[gpu] = event.xid


def run(watch: Watch, stop: threading.Event) -> int:
    """Poll until `stop` is set: 0. NVML missing or wedged does not end it (the condition says Unknown)."""
    while not stop.is_set():
        began = watch.clock()
        watch.poll()
        stop.wait(max(0.0, watch.config.interval_s - (watch.clock() - began)))
    return int(ExitCode.PASS)


def newest_result(directory: Path, node: str) -> float | None:
    """When the node's newest complete result was written (a pass or a fail), or None: none, or no such
    directory (the node was never tested here, or the results are not mounted). An incomplete run, a
    periodic pod preempted or cut at its Job's deadline among them, says nothing about the GPUs, so it
    never makes a node fresh; nor does a file that is not a result of this node."""
    found: list[tuple[float, Path]] = []
    try:
        for path in directory.glob(results.node_pattern(node)):
            try:
                found.append((path.stat().st_mtime, path))
            except OSError:
                continue
    except OSError:
        return None
    for mtime, path in sorted(found, reverse=True):
        if _complete(str(path), mtime, node):
            return mtime
    return None


@functools.lru_cache(maxsize=256)
def _complete(path: str, mtime: float, node: str) -> bool:
    """Whether a result file (as of `mtime`: a rewritten file is read again) is a finished pass or fail of
    `node`; kept, so a poll reads a result file once, not every 30 s."""
    try:
        doc = results.load(Path(path))
    except ConfigError:
        return False
    return doc.node == node and doc.state is not RunState.RUNNING and doc.verdict.status in (Status.PASS, Status.FAIL)


def _ago(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days ago" if seconds >= 86400 else f"{seconds / 3600:.1f} hours ago"


def write_last_poll(path: Path, when: dt.datetime) -> None:
    """The poll's wall time (seconds since the epoch, one line), written to a new file renamed over the old:
    a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"{when.timestamp():.3f}\n")
    os.replace(temporary, path)


def _unavailable(why: str) -> Finding:
    return Finding(
        code=Code.HEALTH_UNAVAILABLE,
        severity=Severity.WARNING,
        gpu=NODE,
        message=f"the GPUs cannot be read: {why}",
        remediation=Remediation.REBOOT_NODE,
        test=judge.TEST,
    )


def _gpu_dict(device: Any) -> dict[str, Any]:
    return {"index": device.index, "uuid": device.uuid, "name": device.name, "pci_bus_id": device.pci_bus_id}


def _pci(nv: Any, handle: Any) -> str:
    return read.text(read.ask(nv, lambda: nv.nvmlDeviceGetPciInfo(handle).busId) or "")
