"""The watch's log: one line for each thing that happens to a finding, as node-problem-detector
logs its problems, and nothing for a quiet poll.

    gpu-burnin watch: node n1: GPU 0 (GPU-5141...): ROW_REMAP_PENDING: appeared (fail): GPU 0 ... pending
    gpu-burnin watch: node n1: GPU 0 (GPU-5141...): ROW_REMAP_PENDING: held 3 polls in a row: request
    gpu-burnin watch: node n1: GPU 0 (GPU-5141...): ROW_REMAP_PENDING: request done: gpu-burnin/health=failing
    gpu-burnin watch: node n1: GPU 0 (GPU-5141...): ROW_REMAP_PENDING: cleared: absent 3 polls; the node stays as it is

Every line names the node, the GPU (index and UUID, or `node-wide`) and the finding's code.
A finding that comes and goes before it holds (a flapping counter) is said once per
FLAP_QUIET_S, with how often it came and went in between, not at every poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from harness.devices import Device
from harness.records import NODE, Code, Finding
from harness.watch.flap import Decision, Note, Op, Track

FLAP_QUIET_S = 600.0
"""A finding that appeared and went is not said again for this long (it is counted)."""
DONE, FAILED = "done", "failed"
_DONE: dict[str, str] = {Op.RECORD: "the condition and a Warning Event"}


class Log:
    def __init__(self, out: TextIO, node: str):
        self.out = out
        self.node = node
        self.devices: dict[str, Device] = {}
        """By UUID: the GPUs judged, to name a finding's GPU by its index too."""
        self._said_at: dict[str, float] = {}
        self._hushed: dict[str, int] = {}
        self._held: set[str] = set()
        """Findings whose holding is said: an action retried after a failed call does not say it again."""

    def line(self, text: str) -> None:
        print(f"gpu-burnin watch: node {self.node}: {text}", file=self.out, flush=True)

    def finding(self, finding: Finding, what: str) -> None:
        code = f"{finding.code} {finding.details.get('xid', '?')}" if finding.code is Code.XID else str(finding.code)
        self.line(f"{self.gpu(finding.gpu)}: {code}: {what}")

    def gpu(self, uuid: str) -> str:
        if uuid == NODE:
            return "node-wide"
        device = self.devices.get(uuid)
        return f"GPU {device.index} ({uuid})" if device is not None else f"GPU ({uuid})"

    # -- what the tracker saw ----------------------------------------------------------------------

    def notes(self, notes: Iterable[tuple[str, Track]], t: float) -> None:
        for kind, track in notes:
            finding = track.finding
            if kind == Note.APPEARED:
                said = self._said_at.get(track.key)
                if said is not None and t - said < FLAP_QUIET_S:
                    self._hushed[track.key] = self._hushed.get(track.key, 0) + 1
                    continue
                self._said_at[track.key] = t
                hushed = self._hushed.pop(track.key, 0)
                again = f"; it came and went {hushed} more times since it was last said" if hushed else ""
                self.finding(finding, f"appeared ({finding.severity}{again}): {_unnamed(finding)}")
            elif kind == Note.GONE:
                self._held.discard(track.key)
                if self._said_at.get(track.key) == track.first_t:  # its appearance was said
                    self.finding(finding, f"gone after {_seen(track)}, before it held: nothing done")
            elif kind == Note.IGNORED:
                self.finding(finding, f"held {_seen(track)}: ignored (--on-{finding.severity} ignore)")
            elif kind == Note.FORGOTTEN:
                self._held.discard(track.key)
                self.finding(finding, "cleared: it was ignored, so nothing to set back")

    # -- what the loop did ---------------------------------------------------------------------------

    def decided(self, decision: Decision) -> None:
        """Before an action: why (held long enough, or begun before a restart)."""
        for track in decision.tracks:
            if track.resume:
                self.finding(track.finding, f"{decision.op} begun before a restart: carried on")
            elif decision.op in (Op.RECORD, Op.REQUEST) and track.key not in self._held:
                self._held.add(track.key)
                self.finding(track.finding, f"held {_seen(track)}: {track.action}")

    def acted(self, op: str, tracks: Iterable[Track], result: str, detail: str = "") -> None:
        """After an action: done, or failed (the API server refused: tried again at the next poll)."""
        text = detail or (_DONE.get(op, "") if result == DONE else "")
        for track in tracks:
            self.finding(track.finding, f"{op} {result}" + (f": {text}" if text else ""))

    def cleared(self, tracks: Iterable[Track], hold: int, xid_clear_s: float) -> None:
        for track in tracks:
            self._held.discard(track.key)
            if track.xid:
                why = f"no such Xid for {xid_clear_s:g} s"
            else:
                why = f"absent {hold} poll{'s' if hold != 1 else ''} in a row"
            self.finding(track.finding, f"clear done: {why}; the condition set back (the node stays as it is)")

    def restored(self, tracks: Iterable[Track]) -> None:
        for track in tracks:
            self.finding(track.finding, f"open from the journal ({track.stage}: {track.action})")


def _unnamed(finding: Finding) -> str:
    """The finding's message without the GPU it begins with (the line names it already)."""
    head, sep, rest = finding.message.partition(f"({finding.gpu}): ")
    return rest if sep and head.startswith("GPU ") and len(head) < 40 else finding.message


def _seen(track: Track) -> str:
    if track.xid:
        return f"{track.seen} Xid event{'s' if track.seen != 1 else ''}"
    return f"{track.seen} poll{'s' if track.seen != 1 else ''} in a row"
