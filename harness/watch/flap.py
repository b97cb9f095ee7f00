"""Flap control: when a finding has held long enough to act on, what it leads to, and when it clears.

A finding is known by its key (code, GPU, and what tells two findings of one code apart:
the remediation, or the Xid). A state finding must be seen in `hold` polls in a row;
one poll without it starts the count again, so a flapping counter never acts. Xid events
count one by one, `xid_hold` of them. A finding is acted on once: recorded, or a request
that the node be taken out (the remediator decides, under the fleet's brake); after that
it only clears, when it has been absent for `hold` polls (an Xid: not come again for
`xid_clear_s`).

The tracker only decides; the loop acts, journals, and then `mark`s what was done, so
an action that failed is decided again at the next poll.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from enum import StrEnum

from harness import severity
from harness.records import Code, Finding, Severity
from harness.watch.config import Action, Legacy, Policy, WatchConfig
from harness.watch.journal import DONE, Entry


class Stage(StrEnum):
    WATCHING = "watching"
    ACTED = "acted"


class Op(StrEnum):
    """What a decision does; the journal holds the values."""

    RECORD = "record"
    REQUEST = "request"
    CLEAR = "clear"


class OldOp(StrEnum):
    """Ops of earlier watches that acted by themselves, still read from a journal of this boot."""

    PEND = "pend"
    CORDON = "cordon"
    EVICT = "evict"


class Note(StrEnum):
    """What `observe` notes for the log: a finding first seen; gone before it held; held, and ignored by the
    policy; an ignored one cleared (nothing to set back)."""

    APPEARED = "appeared"
    GONE = "gone"
    IGNORED = "ignored"
    FORGOTTEN = "forgotten"


def key(finding: Finding) -> str:
    if finding.code is Code.XID:  # an Xid judged stricter for repeating is news, acted on anew
        repeated = ":repeated" if finding.details.get("escalated") else ""
        return f"XID:{finding.gpu}:{finding.details.get('xid', '')}{repeated}"
    return f"{finding.code}:{finding.gpu}:{finding.remediation}"


def action_for(finding: Finding, policy: Policy) -> str:
    if finding.code is Code.HEALTH_UNAVAILABLE:
        return Action.RECORD  # whatever --on-warning says: unknown must never read as healthy
    if finding.severity is not Severity.FAIL:
        return policy.warning
    return policy.critical if severity.critical(finding) else policy.fail


def current_action(action: str, finding: Finding, policy: Policy) -> str:
    """An action read from a journal: an earlier watch's cordon or eviction is a request now."""
    if action in tuple(Legacy):
        return Action.REQUEST
    return action or action_for(finding, policy)


@dataclasses.dataclass
class Track:
    key: str
    finding: Finding
    first_t: float
    last_t: float
    seen: int = 0
    """Polls in a row (an Xid: events) it was seen."""
    absent: int = 0
    stage: Stage = Stage.WATCHING
    action: str = ""
    """What it leads to (config's ignore, record, cordon, evict), once decided."""
    resume: bool = False
    """An action begun before a restart and never finished: decided again, present or not."""

    @property
    def xid(self) -> bool:
        return self.finding.code is Code.XID

    @property
    def open(self) -> bool:
        """Shown on the node: acted on (or its action begun before a restart), and not ignored."""
        return (self.stage == Stage.ACTED or self.resume) and self.action != Action.IGNORE


@dataclasses.dataclass(frozen=True)
class Decision:
    op: Op
    tracks: tuple[Track, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(t.key for t in self.tracks)


class Tracker:
    def __init__(self, config: WatchConfig):
        self.config = config
        self.tracks: dict[str, Track] = {}
        self.notes: list[tuple[str, Track]] = []
        """The last `observe`'s happenings that are no decision (harness/watch/log.py says them)."""

    def observe(self, findings: Sequence[Finding], t: float, *, complete: bool = True) -> list[Decision]:
        """This poll's findings in; what to do now out (nothing changes until `mark`). `complete`: the
        GPUs were read; when they were not (NVML failing), nothing counts as absent, so nothing clears."""
        self.notes = []
        present: dict[str, tuple[Finding, int]] = {}
        for finding in findings:
            k = key(finding)
            count = int(finding.details.get("count", 1)) if finding.code is Code.XID else 1
            present[k] = (finding, present.get(k, (finding, 0))[1] + count)
        for k, (finding, count) in present.items():
            if k not in self.tracks:
                self.tracks[k] = Track(key=k, finding=finding, first_t=t, last_t=t)
                self.notes.append((Note.APPEARED, self.tracks[k]))
            track = self.tracks[k]
            track.finding, track.last_t, track.absent = finding, t, 0
            track.seen += count
        clear: list[Track] = []
        for track in list(self.tracks.values()):
            if track.key in present or not complete:
                continue
            if track.xid:
                expired = t - track.last_t >= self.config.xid_clear_s
                if expired and track.stage == Stage.WATCHING:
                    del self.tracks[track.key]
                    self.notes.append((Note.GONE, track))
                elif expired and track.stage == Stage.ACTED:
                    clear.append(track)
                continue
            track.absent += 1
            if track.stage == Stage.WATCHING and not track.resume:
                del self.tracks[track.key]  # not in a row: the count starts again
                self.notes.append((Note.GONE, track))
            elif track.stage == Stage.ACTED and track.absent >= self.config.hold:
                clear.append(track)
        for track in [c for c in clear if c.action == Action.IGNORE]:
            clear.remove(track)  # never shown, so nothing to set back
            del self.tracks[track.key]
            self.notes.append((Note.FORGOTTEN, track))
        return self._decide(clear)

    def _decide(self, clear: list[Track]) -> list[Decision]:
        by_op: dict[str, list[Track]] = {}
        for track in self.tracks.values():
            op = self._op(track)
            if op:
                by_op.setdefault(op, []).append(track)
        if clear:
            by_op[Op.CLEAR] = clear
        order = (Op.CLEAR, Op.RECORD, Op.REQUEST)
        return [Decision(op, tuple(by_op[op])) for op in order if op in by_op]

    def _op(self, track: Track) -> Op | None:
        if track.stage != Stage.WATCHING:
            return None
        need = self.config.xid_hold if track.xid else self.config.hold
        if track.seen < need and not track.resume:
            return None
        action = track.action or action_for(track.finding, self.config.policy)
        track.action = action
        if action == Action.IGNORE:
            track.stage = Stage.ACTED  # nothing to write, ever
            self.notes.append((Note.IGNORED, track))
            return None
        return Op.RECORD if action == Action.RECORD else Op.REQUEST

    def mark(self, decision: Decision) -> None:
        """The decision was carried out (and journaled)."""
        for track in decision.tracks:
            track.resume = False
            if decision.op == Op.CLEAR:
                self.tracks.pop(track.key, None)
            else:
                track.stage = Stage.ACTED

    def open(self) -> list[Track]:
        return sorted((t for t in self.tracks.values() if t.open), key=lambda t: t.key)

    def restore(self, entries: Iterable[Entry], open_actions: Sequence[Entry]) -> None:
        """The state a journal leaves: what was done stays done; what was begun is resumed. An earlier
        watch's pending cordon (pend done) is resumed as a request; its cordon or eviction, done, stands."""
        policy = self.config.policy
        for entry in entries:
            if entry.phase != DONE or entry.op not in (*Op, *OldOp):
                continue
            for k, data in zip(entry.keys, entry.data.get("findings", ()), strict=False):
                if entry.op == Op.CLEAR:
                    self.tracks.pop(k, None)
                    continue
                finding = Finding.from_dict(data)
                track = self.tracks.setdefault(k, Track(key=k, finding=finding, first_t=entry.t, last_t=entry.t))
                track.finding, track.last_t = finding, entry.t
                track.action = current_action(str(entry.data.get("actions", {}).get(k, "")), finding, policy)
                track.stage = Stage.WATCHING if entry.op == OldOp.PEND else Stage.ACTED
                track.resume = entry.op == OldOp.PEND
        for entry in open_actions:
            if entry.op not in (Op.RECORD, Op.REQUEST, *OldOp):
                continue
            for k, data in zip(entry.keys, entry.data.get("findings", ()), strict=False):
                finding = Finding.from_dict(data)
                track = self.tracks.setdefault(k, Track(key=k, finding=finding, first_t=entry.t, last_t=entry.t))
                track.resume = True
                track.stage = Stage.WATCHING
                track.action = current_action(str(entry.data.get("actions", {}).get(k, "")), finding, policy)
