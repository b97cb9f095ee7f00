"""The journal: every action the watch takes on its node, as JSON Lines on the node's disk.

An action is written (and fsynced) before it is taken, with `phase: begin`, and again
with `phase: done` once every API call of it has answered. A restarted watch replays
the file: what is done is not done again; what was begun and not finished is resumed.
The one window this cannot close is between an API call that succeeded and the `done`
line after it (a crash there repeats that action's last call once on restart).

A journal from another boot of the node is moved aside (PATH.prev) and a new one begun:
after a reboot the GPUs are judged afresh.

What the file holds never stops the watch (a person cannot easily reach a node's disk,
and a watch that exits on its journal crash-loops): a line cut short by a crash or a
full disk is dropped where it is, and the file rewritten without it, every good line
before and after kept; a journal with a line that is not an entry (another shape, an
unknown code, a finding without a severity, an infinite id) is moved aside,
PATH.<time>.bad, kept for a person, and a new one begun with an `aside` action the
watch announces on the node (a Warning Event).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.records import Code, Finding, Remediation, Severity
from harness.strict import Strict
from harness.watch.config import Action, Legacy

SCHEMA = 1
BEGIN, DONE = "begin", "done"
ASIDE = "aside"
"""The journal before this one was unreadable and moved aside: the watch says so on the node (an Event)."""
OPS = ("start", "record", "request", "clear", ASIDE, "pend", "cordon", "evict")
"""The last three are an earlier watch's, which cordoned by itself: read, never written now."""
FINDING_FIELDS = tuple(f.name for f in dataclasses.fields(Finding))
ENTRY_START = b'{"boot":'
"""How every line begins: the keys are sorted."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    op: str
    """start, record, request, clear, aside (and, from earlier watches, pend, cordon, evict)."""
    phase: str
    """begin or done (start: done)."""
    id: int
    """Shared by an action's begin and done."""
    keys: tuple[str, ...] = ()
    """The findings the action is about (harness/watch/flap.py's keys)."""
    t: float = 0.0
    """The watch's clock (monotonic: it runs on across restarts within a boot)."""
    time: str = ""
    """Wall time, for people."""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self, boot: str) -> str:
        line = {"v": SCHEMA, "boot": boot, **dataclasses.asdict(self), "keys": list(self.keys)}
        return json.dumps(line, separators=(",", ":"), sort_keys=True)


class Journal:
    """Append-only; `entries` is what was on disk at open, then every line since."""

    def __init__(self, path: Path, boot: str):
        self.path = path
        self.boot = boot
        self.entries: list[Entry] = []
        self.warnings: list[str] = []
        """What `open` found amiss and did about it, one line each, for the watch's log."""
        self._next_id = 1

    def open(self, *, t: float | None = None, now: dt.datetime | None = None) -> Journal:
        """Read the journal; never stopped by what it holds (a person cannot easily reach a node's disk, and
        a watch that exits on its journal would crash-loop). A torn line is dropped where it is and the file
        rewritten without it; a journal from another boot is moved aside (PATH.prev); an unreadable one too
        (PATH.<time>.bad), with an `aside` action begun for the watch to announce. An entry timed after `t`,
        the clock now, is counted as now. ConfigError only for a path that cannot be a journal at all (not a
        regular file) or cannot be read or written."""
        now = now or dt.datetime.now(dt.UTC)
        self.warnings = []
        raw = self._read()
        kept, torn, problem = _parse(self.path, raw)
        if problem:
            self._aside(problem, now)
            return self
        if any(boot != self.boot for boot, _, _ in kept):
            os.replace(self.path, self.path.with_name(self.path.name + ".prev"))
            kept = []
        elif torn or (raw and not raw.endswith(b"\n")):
            for number in torn:
                self.warnings.append(
                    f"{self.path}: line {number} was cut short (a crash or a full disk mid-write): dropped, and the "
                    "journal rewritten without it"
                )
            try:
                self._rewrite(b"".join(line + b"\n" for _, _, line in kept))
            except ConfigError as err:  # a full disk still: the good lines are read all the same (and after
                # this start, an entry written on after the torn line is found again, as above)
                self.warnings.append(f"{self.path}: {err.problem}; dropped at the next start instead")
        self.entries = [entry for _, entry, _ in kept]
        if t is not None:
            self._clamp(t)
        self._next_id = max((e.id for e in self.entries), default=0) + 1
        return self

    def begin(self, op: str, keys: tuple[str, ...], t: float, now: dt.datetime, **data: Any) -> Entry:
        entry = Entry(op=op, phase=BEGIN, id=self._next_id, keys=keys, t=t, time=_stamp(now), data=data)
        self._next_id += 1
        self._write(entry)
        return entry

    def done(self, begun: Entry, t: float, now: dt.datetime, **data: Any) -> Entry:
        entry = dataclasses.replace(begun, phase=DONE, t=t, time=_stamp(now), data={**begun.data, **data})
        self._write(entry)
        return entry

    def note(self, op: str, t: float, now: dt.datetime, **data: Any) -> Entry:
        """A fact, not an action (the GPUs seen at start)."""
        entry = Entry(op=op, phase=DONE, id=self._next_id, t=t, time=_stamp(now), data=data)
        self._next_id += 1
        self._write(entry)
        return entry

    def open_actions(self) -> list[Entry]:
        """Actions begun and never done (nor done later under another id), oldest first."""
        open_ones: dict[tuple[str, tuple[str, ...]], Entry] = {}
        for entry in self.entries:
            if entry.phase == BEGIN:
                open_ones.setdefault((entry.op, entry.keys), entry)
            else:
                open_ones.pop((entry.op, entry.keys), None)
        return sorted(open_ones.values(), key=lambda e: e.id)

    def _read(self) -> bytes:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            found = self.path.lstat()
        except FileNotFoundError:
            return b""
        except OSError as err:
            raise ConfigError(f"cannot read the journal: {err.strerror}", file=self.path, option="--journal") from err
        if not stat.S_ISREG(found.st_mode):  # a person's doing, not a crash's: said, not moved
            raise ConfigError("not a regular file: give a file's path", file=self.path, option="--journal")
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise ConfigError(f"cannot read the journal: {err.strerror}", file=self.path, option="--journal") from err

    def _aside(self, problem: str, now: dt.datetime) -> None:
        """Move the journal aside, kept for a person, and begin afresh with the move to announce."""
        stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.{stamp}.bad")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}-{n}.bad")
        try:
            os.rename(self.path, target)
        except OSError as err:
            why = f"cannot move the unreadable journal aside: {err.strerror} ({problem})"
            raise ConfigError(why, file=self.path, option="--journal") from err
        self.warnings.append(f"{self.path} cannot be read ({problem}): moved aside to {target}, and a new one begun")
        self.entries = []
        self._next_id = 1
        self.begin(ASIDE, (), 0.0, now, moved_to=str(target), reason=problem)

    def _rewrite(self, content: bytes) -> None:
        """Replace the journal with `content`, atomically: a crash leaves the old file or the new, whole."""
        temporary = self.path.with_name(f".{self.path.name}.rewrite")
        try:
            with temporary.open("wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as err:
            why = f"cannot rewrite the journal: {err.strerror}"
            raise ConfigError(why, file=self.path, option="--journal") from err

    def _clamp(self, t: float) -> None:
        """The clock is monotonic within a boot and the journal is of this boot (its boot id says so), so a `t`
        after the clock now was written under another clock: a boot whose id could not be read (then every boot
        has the same empty id) or a corrupted line. Kept as it is, it would keep an Xid finding open for ever
        (an Xid clears `--xid-clear-after` past its `t`); counted as now, it clears that long after this start,
        and the order of the entries (by id) is unchanged."""
        ahead = [n for n, entry in enumerate(self.entries) if entry.t > t]
        for n in ahead:
            self.entries[n] = dataclasses.replace(self.entries[n], t=t)
        if ahead:
            self.warnings.append(
                f"{self.path}: {len(ahead)} entries are timed after the clock now (another boot's clock?): "
                "counted as now"
            )

    def _write(self, entry: Entry) -> None:
        line = entry.to_json(self.boot) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:  # an action that cannot be journaled is not taken
            raise ConfigError(f"cannot write the journal: {err.strerror}", file=self.path, option="--journal") from err
        self.entries.append(entry)


def _parse(path: Path, raw: bytes) -> tuple[list[tuple[str, Entry, bytes]], list[int], str]:
    """(boot, entry, line) of each good line; the numbers of the torn lines; what makes the journal
    unreadable ("" when nothing does).

    A torn line is what a write cut short leaves: the start of an entry (`{...`, perhaps with the next
    start's first entry written on after it, as the file had no newline at its end), or NUL bytes (blocks
    the filesystem allotted and a crash never filled). Any other line that is not an entry (a JSON entry
    of another shape, an unknown code, text) is not a crash's doing: the journal is not to be trusted."""
    check = _Lines(path)
    kept: list[tuple[str, Entry, bytes]] = []
    torn: list[int] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):  # not JSON (or not UTF-8)
            if not _torn(line):
                return [], [], f"line {number} is not a journal entry"
            torn.append(number)
            glued = _glued(check, line)
            if glued is not None:
                kept.append(glued)
            continue
        try:
            boot, entry = check.entry(data)
        except ConfigError as err:
            return [], [], f"line {number}: {': '.join(part for part in (err.field, err.problem) if part)}"
        kept.append((boot, entry, line))
    return kept, torn, ""


def _torn(line: bytes) -> bool:
    rest = line.strip(b"\0 \t\r")
    return not rest or rest.startswith(b"{")


def _glued(check: _Lines, line: bytes) -> tuple[str, Entry, bytes] | None:
    """The whole entry written on after a torn one, if there is one (an entry's first key is its boot)."""
    start = line.find(ENTRY_START, 1)
    while start != -1:
        try:
            boot, entry = check.entry(json.loads(line[start:]))
            return boot, entry, line[start:]
        except (ValueError, RecursionError, ConfigError):
            start = line.find(ENTRY_START, start + 1)
    return None


class _Lines(Strict):
    """One journal line, checked whole with the strict helpers: every field the watch reads back."""

    def entry(self, data: Any) -> tuple[str, Entry]:
        if not isinstance(data, dict):
            raise self.fail("", "not a JSON object")
        self.only(data, "", {"v", "boot", "op", "phase", "id", "keys", "t", "time", "data"})
        if data.get("v") != SCHEMA or isinstance(data.get("v"), bool):
            raise self.fail("v", f"is {data.get('v')!r}; this gpu-burnin writes version {SCHEMA}")
        op, phase = self.get(data, "op", str), self.get(data, "phase", str)
        if op not in OPS:
            raise self.fail("op", f"is {op!r}; expected one of {', '.join(OPS)}")
        if phase not in (BEGIN, DONE):
            raise self.fail("phase", f"is {phase!r}; expected {BEGIN} or {DONE}")
        number = self.get(data, "id", int)
        if number < 1:
            raise self.fail("id", f"is {number}; expected a whole number from 1")
        keys = self.get(data, "keys", list, default=[])
        if not all(isinstance(k, str) for k in keys):
            raise self.fail("keys", f"expected a list of strings, got {keys!r}")
        t = data.get("t", 0.0)
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise self.fail("t", f"expected the watch's clock, a finite number from 0, got {t!r}")
        details = self.get(data, "data", dict, default={})
        self.data(details, len(keys))
        entry = Entry(
            op=op,
            phase=phase,
            id=number,
            keys=tuple(keys),
            t=float(t),
            time=self.get(data, "time", str, default=""),
            data=details,
        )
        return self.get(data, "boot", str, default=""), entry

    def data(self, data: dict[str, Any], keys: int) -> None:
        self.only(data, "data", {"findings", "actions", "gpus", "run_id", "braked", "evicted", "moved_to", "reason"})
        findings = self.get(data, "findings", list, default=[], where="data")
        if "findings" in data and len(findings) != keys:
            raise self.fail("data.findings", f"holds {len(findings)} findings for {keys} keys")
        for n, finding in enumerate(findings):
            self.finding(finding, f"data.findings[{n}]")
        for key, action in self.get(data, "actions", dict, default={}, where="data").items():
            if action not in (*Action, *Legacy):
                raise self.fail(f"data.actions.{key}", f"is {action!r}; expected one of {', '.join(Action)}")
        for n, gpu in enumerate(self.get(data, "gpus", list, default=[], where="data")):
            where = f"data.gpus[{n}]"
            self.only(self.table(gpu, where), where, {"index", "uuid", "name", "pci_bus_id"})
            if self.get(gpu, "index", int, where=where) < 0:
                raise self.fail(f"{where}.index", f"is {gpu['index']}; expected a GPU's index, from 0")
            self.text(gpu, "uuid", f"{where}.uuid")
            for key in ("name", "pci_bus_id"):
                self.get(gpu, key, str, default="", where=where)
        for key in ("run_id", "moved_to", "reason"):
            self.get(data, key, str, default="", where="data")
        if "braked" in data:
            self.get(data, "braked", bool, where="data")
        evicted = self.get(data, "evicted", list, default=[], where="data")
        if not all(isinstance(pod, str) for pod in evicted):
            raise self.fail("data.evicted", f"expected a list of pod names, got {evicted!r}")

    def finding(self, finding: Any, where: str) -> None:
        """As records.Finding.from_dict reads it, and as the watch's flap control looks into it."""
        self.only(self.table(finding, where), where, set(FINDING_FIELDS))
        for key, kind in (("code", Code), ("severity", Severity), ("remediation", Remediation)):
            value = self.get(finding, key, str, default=None if key != "remediation" else "none", where=where)
            if value not in set(kind):
                raise self.fail(f"{where}.{key}", f"is {value!r}; expected one of {', '.join(kind)}")
        self.get(finding, "message", str, where=where)
        for key in ("gpu", "test", "metric"):
            self.get(finding, key, str, default="", where=where)
        details = self.get(finding, "details", dict, default={}, where=where)
        for key in ("xid", "count"):
            if key in details:
                self.get(details, key, int, where=f"{where}.details")

    def table(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {value!r}")
        return value


def read_boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
