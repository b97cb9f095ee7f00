"""What the watch writes to its node: its condition, Events, and its request that the node be taken
out. No API call is made elsewhere in the watch, and none about another node: the watch never lists
the fleet, never cordons, never evicts. The remediator (harness/remediator/) decides on the request,
under the fleet's brake, and drains critical nodes.

The condition `GPUBurnInWatch` shows every finding open on the node: True with reason
NoFindings (or Warnings), False with the finding codes, Unknown when NVML cannot be read.
It is written when what it says changes, never to show that the watch lives (that is the pod's readiness
and the metrics file's last-poll time): a quiet node makes no API call at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from harness import severity
from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import Api
from harness.kube.node import Marks, Node
from harness.records import Code, Finding, Severity
from harness.verdict import Status

EVENT_RECORD = "GPUBurnInWatch"
EVENT_REQUEST = "GPUBurnInFailing"
EVENT_CLEARED = "GPUBurnInWatchCleared"
EVENT_JOURNAL = "GPUBurnInWatchJournal"
"""The watch's journal could not be read: moved aside, a new one begun."""
MESSAGE_MAX = 1000


@dataclasses.dataclass(frozen=True)
class Shown:
    """A finding as the condition shows it."""

    finding: Finding


def condition_for(shown: Sequence[Shown], gpus: int) -> tuple[str, str, str]:
    """(status, reason, message) of the watch's condition for the findings open on the node."""
    if not shown:
        return "True", "NoFindings", f"watching {gpus} GPUs: nothing found"
    message = "; ".join(s.finding.message for s in shown)
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 3] + "..."
    failing = [s.finding for s in shown if s.finding.severity is Severity.FAIL]
    if any(s.finding.code is Code.HEALTH_UNAVAILABLE for s in shown) and not failing:
        return "Unknown", "NvmlUnavailable", message
    if failing:
        return "False", codes(failing), message
    return "True", "Warnings", message


def codes(findings: Sequence[Finding]) -> str:
    return ",".join(dict.fromkeys(str(f.code) for f in findings))


class NodeWriter:
    """The watch's node, as last read or written, and every write the watch makes to it."""

    def __init__(self, api: Api, name: str, marks: Marks, *, boot: str = ""):
        self.api = api
        self.name = name
        self.marks = marks
        self.boot = boot
        """This boot's id: with a journal entry's id and time, it names the entry's Event."""
        self.node: Node = {}

    def read(self) -> Node:
        self.node = self.api.get_node(self.name)
        return self.node

    def current(self) -> dict[str, Any]:
        return nodes.condition(self.node, nodes.WATCH_CONDITION) or {}

    def shows(self, wanted: tuple[str, str, str]) -> bool:
        """The node shows this condition already (status, reason and message): nothing to write."""
        found = self.current()
        return (found.get("status"), found.get("reason"), found.get("message")) == wanted

    def condition(self, wanted: tuple[str, str, str], now: dt.datetime) -> None:
        """Write the condition, only if the node does not show it already."""
        if self.node and self.shows(wanted):
            return
        status, reason, message = wanted
        body = nodes.status_patch(self.node, status, reason, message, now, kind=nodes.WATCH_CONDITION)
        self.node = self.api.patch_node_status(self.name, body)

    def event(self, reason: str, message: str, now: dt.datetime, *, key: str, warning: bool = True) -> None:
        """An Event about this node; `key` names what it announces (a journal entry), so that a retried
        Event is refused as a duplicate rather than posted twice."""
        body = nodes.event(
            self.node,
            namespace=self.api.namespace,
            key=f"{self.boot}/{key}",
            warning=warning,
            reason=reason,
            message=message,
            now=now,
        )
        self.api.create_event(body)

    def requested(self) -> bool:
        """The node carries a health mark already: a request (periodic's, or an earlier finding's), or the
        remediator took it out."""
        return self.marks.unhealthy_label.key in nodes.labels_of(self.node)

    def request(
        self, failing: Sequence[Finding], wanted: tuple[str, str, str], now: dt.datetime, key: str, asked: dt.datetime
    ) -> str:
        """Ask for the node to be taken out: the condition first, then the health label `failing` (where
        there is no health mark yet), the severity (only raised), `gpu-burnin/requested` (`asked`: when the
        action began, the same when it is carried on after a restart), then a Warning Event. What the
        node's health label says after it."""
        self.read()
        mine = nodes.json_annotation(nodes.annotations_of(self.node), nodes.REQUESTED)
        before = self.requested() and (mine.get("by"), mine.get("time")) != ("gpu-burnin watch", nodes.stamp(asked))
        self.condition(wanted, now)  # not again after a restart: the node shows it
        first = failing[0]
        remediation = f" (remediation: {first.remediation})" if str(first.remediation) != "none" else ""
        outcome = nodes.Outcome(
            run_id=key,
            verdict=Status.FAIL,
            codes=tuple(dict.fromkeys(str(f.code) for f in failing)),
            summary=f"{first.message}{remediation}",
            when=asked,
            command="watch",
            critical=severity.any_critical(failing),
        )
        self.node = actions.update(
            self.api, self.name, lambda n: actions.request_patch(n, self.marks, outcome), read=self.node
        )
        grade = nodes.CRITICAL if outcome.critical else nodes.FAIL
        if before:
            said = f"already asked to be taken out, or out; the watch also found ({grade}): {wanted[2]}"
            self.event(EVENT_RECORD, said, now, key=key)
        else:
            self.event(EVENT_REQUEST, f"asked to be taken out of service ({grade}): {wanted[2]}", now, key=key)
        return str(nodes.labels_of(self.node).get(self.marks.unhealthy_label.key, ""))
