"""What the watch writes to its node: its condition, Events, the cordon (periodic's path, brake
included: harness/kube/actions.take_out) and evictions. No API call is made elsewhere in the watch.

The condition `GPUBurnInWatch` shows every finding open on the node: True with reason
NoFindings (or Warnings), False with the finding codes (or CordonPending for the one
poll between a finding holding and its cordon), Unknown when NVML cannot be read. Its
heartbeat is the only write a quiet node makes, at most every `--heartbeat`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import Api, Blocked
from harness.kube.node import Marks, Node
from harness.records import Code, Finding, Severity

EVENT_RECORD = "GPUBurnInWatch"
EVENT_CLEARED = "GPUBurnInWatchCleared"
EVENT_EVICTED = "GPUBurnInEvicted"
EVENT_JOURNAL = "GPUBurnInWatchJournal"
"""The watch's journal could not be read: moved aside, a new one begun."""
MESSAGE_MAX = 1000
GPU_RESOURCE = "nvidia.com/gpu"
MIRROR = "kubernetes.io/config.mirror"


@dataclasses.dataclass(frozen=True)
class Shown:
    """A finding as the condition shows it."""

    finding: Finding
    pending: bool = False


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
    if any(s.pending for s in shown):
        return "False", actions.CORDON_PENDING, message
    if failing:
        return "False", codes(failing), message
    return "True", "Warnings", message


def codes(findings: Sequence[Finding]) -> str:
    return ",".join(dict.fromkeys(str(f.code) for f in findings))


class NodeWriter:
    """The watch's node, as last read or written, and every write the watch makes to it."""

    def __init__(self, api: Api, name: str, marks: Marks, fleet: actions.Fleet):
        self.api = api
        self.name = name
        self.marks = marks
        self.fleet = fleet
        self.node: Node = {}
        self.written_at: dt.datetime | None = None
        """When the condition was last written (or found fresh on the node at start)."""
        self.evicted: list[str] = []

    def read(self) -> Node:
        self.node = self.api.get_node(self.name)
        return self.node

    def current(self) -> dict[str, Any]:
        return nodes.condition(self.node, nodes.WATCH_CONDITION) or {}

    def fresh(self, wanted: tuple[str, str, str], now: dt.datetime, heartbeat_s: float) -> bool:
        """The node already shows this condition (status and reason: a cordon's message is worded by
        periodic's path) with a recent heartbeat: a restart need not write."""
        found = self.current()
        beat = nodes.parse_stamp(str(found.get("lastHeartbeatTime", "")))
        same = (found.get("status"), found.get("reason")) == wanted[:2]
        return same and beat is not None and (now - beat).total_seconds() < heartbeat_s

    def condition(self, wanted: tuple[str, str, str], now: dt.datetime) -> None:
        status, reason, message = wanted
        body = nodes.status_patch(self.node, status, reason, message, now, kind=nodes.WATCH_CONDITION)
        self.node = self.api.patch_node_status(self.name, body)
        self.written_at = now

    def heartbeat(self, now: dt.datetime) -> None:
        found = self.current()
        self.condition((str(found.get("status")), str(found.get("reason")), str(found.get("message"))), now)

    def event(self, reason: str, message: str, now: dt.datetime, *, warning: bool = True) -> None:
        self.api.create_event(nodes.event(self.node, warning=warning, reason=reason, message=message, now=now))

    def out(self) -> bool:
        """Already out of service by this tool's marks (periodic's, or an earlier finding's)."""
        labels = nodes.labels_of(self.node)
        return labels.get(self.marks.unhealthy_label.key) == self.marks.unhealthy_label.value

    def cordon(self, failing: Sequence[Finding], wanted: tuple[str, str, str], now: dt.datetime, run_id: str) -> bool:
        """Out of service, brake permitting: periodic's path. True when braked (the node keeps serving).
        `run_id` names this cordon: a cordon that landed before a restart is finished, not repeated."""
        self.read()
        if self.out():
            self.condition(wanted, now)
            if self.cordoned_by() == run_id:  # ours, cut short before its Event
                self.event("GPUBurnInUnhealthy", f"cordoned: {wanted[2]}", now)
            else:  # the cordon stands: say what else was found, once
                self.event(EVENT_RECORD, f"already out of service; the watch also found: {wanted[2]}", now)
            return False
        first = failing[0]
        remediation = f" (remediation: {first.remediation})" if str(first.remediation) != "none" else ""
        outcome = nodes.Outcome(
            run_id=run_id,
            verdict="fail",
            codes=tuple(dict.fromkeys(str(f.code) for f in failing)),
            summary=f"{first.message}{remediation}",
            when=now,
            command="watch",
        )
        done = actions.take_out(
            self.api, self.name, outcome, self.marks, self.fleet, now, read=self.node, kind=nodes.WATCH_CONDITION
        )
        self.read()  # what take_out wrote, for the heartbeat
        self.written_at = now
        return done.braked

    def cordoned_by(self) -> str:
        """The run id in the node's gpu-burnin/cordoned annotation, if any."""
        try:
            found = json.loads(nodes.annotations_of(self.node).get(nodes.CORDONED, "{}"))
        except ValueError:
            return ""
        return str(found.get("run_id", "")) if isinstance(found, dict) else ""

    def gpu_pods(self) -> list[dict[str, Any]]:
        """The pods on this node that hold GPUs and would go if evicted (not DaemonSets', not mirror pods,
        not those finished or already going)."""
        found = []
        for pod in self.api.list_pods_on_node(self.name):
            meta, status = pod.get("metadata", {}), pod.get("status", {})
            owners = [o.get("kind") for o in meta.get("ownerReferences") or [] if o.get("controller")]
            if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
                continue
            if "DaemonSet" in owners or MIRROR in (meta.get("annotations") or {}):
                continue
            if _gpus(pod) > 0:
                found.append(pod)
        return found

    def evict(self) -> tuple[list[str], list[str]]:
        """Evict the node's GPU pods: (evicted now, blocked by a disruption budget for now)."""
        evicted, blocked = [], []
        for pod in self.gpu_pods():
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            try:
                if self.api.evict_pod(namespace, name):
                    evicted.append(f"{namespace}/{name}")
            except Blocked:
                blocked.append(f"{namespace}/{name}")
        self.evicted += evicted
        return evicted, blocked


def _gpus(pod: dict[str, Any]) -> int:
    spec = pod.get("spec", {})
    most = 0
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for part in ("limits", "requests"):
            try:
                most = max(most, int(str((resources.get(part) or {}).get(GPU_RESOURCE, "0"))))
            except ValueError:
                most = max(most, 1)  # a quantity we do not parse is still a GPU request
    return most
