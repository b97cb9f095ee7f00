"""The journal: every action the watch takes on its node, as JSON Lines on the node's disk.

An action is written (and fsynced) before it is taken, with `phase: begin`, and again
with `phase: done` once every API call of it has answered. A restarted watch replays
the file: what is done is not done again; what was begun and not finished is resumed.
The one window this cannot close is between an API call that succeeded and the `done`
line after it (a crash there repeats that action's last call once on restart).

A journal from another boot of the node is moved aside (PATH.prev) and a new one begun:
after a reboot the GPUs are judged afresh.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

SCHEMA = 1
BEGIN, DONE = "begin", "done"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    op: str
    """start, record, pend, cordon, evict, clear."""
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
        self._next_id = 1

    def open(self) -> Journal:
        """Read the journal (or move one from another boot aside). Raises ConfigError for a file that is
        not this tool's journal; a torn last line (a crash mid-write) is dropped."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        except OSError as err:
            raise ConfigError(f"cannot read the journal: {err.strerror}", file=self.path, option="--journal") from err
        lines = text.splitlines()
        parsed = list(self._parse(lines, torn_ok=not text.endswith("\n")))
        if parsed and any(boot != self.boot for boot, _ in parsed):
            os.replace(self.path, self.path.with_name(self.path.name + ".prev"))
            parsed = []
        self.entries = [entry for _, entry in parsed]
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

    def _parse(self, lines: list[str], *, torn_ok: bool) -> Iterator[tuple[str, Entry]]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data.get("v") != SCHEMA:
                    raise ValueError(f"schema {data.get('v')!r}, expected {SCHEMA}")
                entry = Entry(
                    op=str(data["op"]),
                    phase=str(data["phase"]),
                    id=int(data["id"]),
                    keys=tuple(str(k) for k in data.get("keys", ())),
                    t=float(data.get("t", 0.0)),
                    time=str(data.get("time", "")),
                    data=dict(data.get("data") or {}),
                )
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                if torn_ok and number == len(lines):
                    return  # the last line of a write a crash cut short: never acted on
                raise ConfigError(
                    f"line {number} is not a journal entry ({err}); move the file aside to start afresh",
                    file=self.path,
                    option="--journal",
                ) from None
            yield str(data.get("boot", "")), entry


def read_boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
