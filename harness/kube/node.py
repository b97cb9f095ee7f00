"""What gpu-burnin changes on a Node, computed from plain dicts: no API calls here.

Every change is a strategic merge patch that carries the resourceVersion it was
computed from, so a node changed in between is refused (409) rather than
overwritten. Taints are an atomic list: a patch that touches them writes the whole
list, built from the list just read with only this tool's taint added or removed,
so another writer's taint read with it survives, and one added after the read makes
the patch fail and be recomputed. Only this tool's taints, labels (gpu-burnin/...),
annotations, its conditions and, when the remediator takes a node out,
spec.unschedulable are ever written. Who may write which is fixed in
docs/kubernetes.md ("Who may do what"): a node agent only requests (`request_patch`),
the remediator only takes out (`take_out_patch`), a person releases (retest).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from harness.errors import ConfigError
from harness.verdict import Status

CONDITION = "GPUBurnIn"
WATCH_CONDITION = "GPUBurnInWatch"
"""The passive watch's condition (harness/watch/): True while it sees nothing wrong, False with the
finding codes, Unknown when it cannot read the GPUs; written only when it changes."""
REMEDIATION_CONDITION = "GPUBurnInRemediation"
"""The remediator's condition: True while it holds the node out (TakenOut, Draining, Drained, DrainOverdue,
DrainBlocked), False when the brake kept a failing node in service (Braked)."""
FAILING = "failing"
"""The value of the health label a node agent sets: a request to take the node out."""
FAIL, CRITICAL = "fail", "critical"
"""The severity label's values: critical failures are drained (the remediator's --drain)."""
LAST_RESULT = "gpu-burnin/last-result"
"""Annotation: the last run's id, verdict, finding codes and time, as JSON."""
INCOMPLETE_STREAK = "gpu-burnin/incomplete-streak"
"""Annotation: how many periodic runs in a row were incomplete."""
CORDONED = "gpu-burnin/cordoned"
"""Annotation, the remediator's: {by, was_cordoned, time} of its take-out, so that retest lifts only a cordon
gpu-burnin set (was_cordoned false), and the drain deadline runs from `time`."""
REQUESTED = "gpu-burnin/requested"
"""Annotation, a node agent's: {by, reason, codes, time} of its request to take the node out; the remediator
serves the oldest first."""
REMEDIATOR = "gpu-burnin remediator"
PENDING_SINCE = "gpu-burnin/pending-since"
"""Annotation: when retest put the node back in preflight."""
COMPONENT = "gpu-burnin"

Node = dict[str, Any]
Patch = dict[str, Any]


PREFIX = "gpu-burnin/"
"""The prefix of every taint and label key this tool writes (`--mark-prefix` changes it)."""
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_prefix(text: str, *, option: str = "--mark-prefix") -> str:
    """A key prefix as Kubernetes writes one: a DNS subdomain and a slash (`gpu-burnin/`)."""
    domain = text.removesuffix("/")
    if not text.endswith("/") or len(domain) > 253 or not _SUBDOMAIN.fullmatch(domain):
        raise ConfigError(f"{text!r} is not a key prefix: a DNS subdomain and a slash, as gpu-burnin/", option=option)
    return text


def check_key(key: str, *, prefix: str, option: str) -> str:
    """One of this tool's keys: `prefix` then a name Kubernetes accepts (63 characters at most).
    Another owner's key (nvidia.com/gpu, team) is refused: a release would remove it."""
    if not key.startswith(prefix):
        raise ConfigError(
            f"{key!r} is not one of gpu-burnin's keys: they begin with {prefix!r} (--mark-prefix)", option=option
        )
    if not _NAME.fullmatch(key[len(prefix) :]):
        raise ConfigError(
            f"{key!r} is not a valid key: after {prefix!r}, 1 to 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit",
            option=option,
        )
    return key


def check_value(value: str, *, option: str) -> str:
    """A label or taint value Kubernetes accepts: empty, or a name of 63 characters at most."""
    if value and not _NAME.fullmatch(value):
        raise ConfigError(
            f"{value!r} is not a valid value: 1 to 63 letters, digits, '-', '_' or '.', beginning and ending "
            "with a letter or digit",
            option=option,
        )
    return value


def check_node_name(name: str, *, option: str = "--node") -> str:
    """A node name as Kubernetes allows one (a DNS subdomain): checked before any API call."""
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise ConfigError(f"{name[:80]!r} is not a node name (lower-case letters, digits, '-' and '.')", option=option)
    return name


@dataclasses.dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str, *, option: str) -> Taint:
        """KEY[=VALUE]:NoSchedule, as kubectl taint writes it. Only NoSchedule: a NoExecute taint would
        evict the node's pods past their PodDisruptionBudgets, and PreferNoSchedule keeps no pod out."""
        spec, _, effect = text.rpartition(":")
        key, _, value = spec.partition("=")
        if not key or effect != "NoSchedule":
            raise ConfigError(f"{text!r} is not KEY[=VALUE]:NoSchedule", option=option)
        check_value(value, option=option)
        return cls(key=key, value=value, effect=effect)

    def to_dict(self) -> dict[str, str]:
        found = {"key": self.key, "effect": self.effect}
        if self.value:
            found["value"] = self.value
        return found

    def matches(self, taint: dict[str, Any]) -> bool:
        return bool(taint.get("key") == self.key and taint.get("effect") == self.effect)

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclasses.dataclass(frozen=True)
class Label:
    key: str
    value: str

    @classmethod
    def parse(cls, text: str, *, option: str) -> Label:
        key, sep, value = text.partition("=")
        if not key or not sep:
            raise ConfigError(f"{text!r} is not KEY=VALUE", option=option)
        check_value(value, option=option)
        return cls(key=key, value=value)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclasses.dataclass(frozen=True)
class Key:
    """A label key whose values the code decides (the severity: fail, critical)."""

    key: str

    def __str__(self) -> str:
        return self.key


@dataclasses.dataclass(frozen=True, kw_only=True)
class Marks:
    """This tool's taints and labels on a node, as configured."""

    preflight_taint: Taint = Taint(f"{PREFIX}preflight", "", "NoSchedule")
    preflight_label: Label = Label(f"{PREFIX}preflight", "pending")
    unhealthy_taint: Taint = Taint(f"{PREFIX}unhealthy", "", "NoSchedule")
    unhealthy_label: Label = Label(f"{PREFIX}health", "unhealthy")
    """The health label: `failing` (a node agent's request), or this value (the remediator took it out)."""
    severity: Key = Key(f"{PREFIX}severity")
    fresh: Label = Label(f"{PREFIX}fresh", "true")
    """The watch keeps it on its node while the node's newest result is younger than --retest-after: the
    periodic pods require it absent, so they go to the nodes tested longest ago."""

    @classmethod
    def under(cls, prefix: str) -> Marks:
        """The default marks with their keys under `prefix` instead of gpu-burnin/."""
        default = cls()
        return cls(
            **{
                field.name: dataclasses.replace(
                    getattr(default, field.name), key=prefix + getattr(default, field.name).key.removeprefix(PREFIX)
                )
                for field in dataclasses.fields(cls)
            }
        )

    def check(self, prefix: str, flags: dict[str, str]) -> Marks:
        """Every key under `prefix` and valid; ConfigError naming the flag (`flags`: field -> flag)."""
        for field in dataclasses.fields(self):
            check_key(getattr(self, field.name).key, prefix=prefix, option=flags.get(field.name, field.name))
        return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """A run's outcome as the node should show it."""

    run_id: str
    verdict: Status
    codes: tuple[str, ...]
    """The codes of the findings that decided it, most important first."""
    summary: str
    """One line: the first reason, with its remediation."""
    when: dt.datetime
    command: str
    critical: bool = False
    """A failure whose jobs are dead or wrong (harness/severity.py): the node is to be drained."""


# -- reading a node ---------------------------------------------------------------------


def taints_of(node: Node) -> list[dict[str, Any]]:
    return list(node.get("spec", {}).get("taints") or [])


def labels_of(node: Node) -> dict[str, str]:
    return dict(node.get("metadata", {}).get("labels") or {})


def annotations_of(node: Node) -> dict[str, str]:
    return dict(node.get("metadata", {}).get("annotations") or {})


def has_taint(node: Node, taint: Taint) -> bool:
    return any(taint.matches(t) for t in taints_of(node))


def condition(node: Node, kind: str = CONDITION) -> dict[str, Any] | None:
    for found in node.get("status", {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None


def last_result(node: Node) -> dict[str, Any]:
    try:
        value = json.loads(annotations_of(node).get(LAST_RESULT, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


GPU_RESOURCE = "nvidia.com/gpu"


def has_gpus(node: Node) -> bool:
    """Labelled or advertised as having NVIDIA GPUs: by GPU feature discovery
    (`nvidia.com/gpu.present`, `nvidia.com/gpu.count`) or the device plugin's capacity."""
    labels = labels_of(node)
    if labels.get("nvidia.com/gpu.present") == "true":
        return True
    capacity = (node.get("status") or {}).get("capacity") or {}
    return any(_positive(v) for v in (labels.get("nvidia.com/gpu.count"), capacity.get(GPU_RESOURCE)))


def _positive(text: object) -> bool:
    try:
        return int(str(text)) > 0
    except ValueError:
        return False


def incomplete_streak(node: Node) -> int:
    try:
        return max(0, int(annotations_of(node).get(INCOMPLETE_STREAK, "0")))
    except ValueError:
        return 0


def json_annotation(annotations: dict[str, str], key: str) -> dict[str, Any]:
    """An annotation holding a JSON object, or {} when it is absent or not one."""
    try:
        value = json.loads(annotations.get(key, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def requested_at(annotations: dict[str, str]) -> dt.datetime | None:
    """When a node agent asked for the node to be taken out (None: no request, or one without a time)."""
    return parse_stamp(str(json_annotation(annotations, REQUESTED).get("time", "")))


def cordoned_by_us(annotations: dict[str, str]) -> bool:
    """Whether the remediator set the node's cordon: its record says the node was not cordoned before.
    Anything else (no record, a record that cannot be read, was_cordoned true or missing) is someone
    else's cordon, which only they lift."""
    record = json_annotation(annotations, CORDONED)
    return record.get("by") == REMEDIATOR and record.get("was_cordoned") is False


def severity_rank(value: str | None) -> int:
    return {FAIL: 1, CRITICAL: 2}.get(value or "", 0)


# -- patches ------------------------------------------------------------------------------


def request_patch(
    node: Node,
    marks: Marks,
    *,
    critical: bool,
    requested: dict[str, Any],
    annotations: dict[str, str | None] | None = None,
) -> Patch:
    """A node agent's request to take its node out: the health label `failing` only where there is none
    (never over `unhealthy`), `requested` only with it, the severity only raised (fail -> critical), and
    the agent's own `annotations`. Never a taint, never the cordon."""
    labels = labels_of(node)
    set_labels: dict[str, str | None] = {}
    set_annotations: dict[str, str | None] = dict(annotations or {})
    if marks.unhealthy_label.key not in labels:
        set_labels[marks.unhealthy_label.key] = FAILING
        set_annotations[REQUESTED] = json.dumps(requested, separators=(",", ":"))
    wanted = CRITICAL if critical else FAIL
    if severity_rank(wanted) > severity_rank(labels.get(marks.severity.key)):
        set_labels[marks.severity.key] = wanted
    return patch(node, set_labels=set_labels, set_annotations=set_annotations)


def take_out_patch(node: Node, marks: Marks, now: dt.datetime) -> Patch | None:
    """The remediator's take-out of a node that requests it (health `failing`): cordon, the unhealthy taint,
    health `unhealthy`, and the record of whether the node was cordoned already. None when the node no
    longer requests it (released, or taken out already)."""
    if labels_of(node).get(marks.unhealthy_label.key) != FAILING:
        return None
    was = bool(node.get("spec", {}).get("unschedulable"))
    record = {"by": REMEDIATOR, "was_cordoned": was, "time": stamp(now)}
    return patch(
        node,
        add=[marks.unhealthy_taint],
        set_labels={marks.unhealthy_label.key: marks.unhealthy_label.value},
        set_annotations={CORDONED: json.dumps(record, separators=(",", ":"))},
        unschedulable=True,
    )


def metadata_changes(body: Patch) -> bool:
    """Whether a patch from `patch` changes anything beyond its resourceVersion precondition."""
    return bool(body.get("spec")) or len(body.get("metadata", {})) > 1


def patch(
    node: Node,
    *,
    add: Sequence[Taint] = (),
    remove: Sequence[Taint] = (),
    set_labels: dict[str, str | None] | None = None,
    set_annotations: dict[str, str | None] | None = None,
    unschedulable: bool | None = None,
) -> Patch:
    """A strategic merge patch of the node's metadata and spec, preconditioned on its resourceVersion.

    Labels and annotations set to None are deleted. The taint list is written only when it changes."""
    metadata: dict[str, Any] = {"resourceVersion": node["metadata"]["resourceVersion"]}
    if set_labels:
        metadata["labels"] = dict(set_labels)
    if set_annotations:
        metadata["annotations"] = dict(set_annotations)
    body: Patch = {"metadata": metadata}
    current = taints_of(node)
    wanted = [t for t in current if not any(r.matches(t) for r in remove)]
    wanted += [a.to_dict() for a in add if not any(a.matches(t) for t in wanted)]
    spec: dict[str, Any] = {}
    if wanted != current:
        spec["taints"] = wanted
    if unschedulable is not None and bool(node.get("spec", {}).get("unschedulable")) != unschedulable:
        spec["unschedulable"] = unschedulable
    if spec:
        body["spec"] = spec
    return body


def status_patch(
    node: Node,
    status: str,
    reason: str,
    message: str,
    now: dt.datetime,
    *,
    kind: str = CONDITION,
    since: dt.datetime | None = None,
) -> Patch:
    """The GPUBurnIn condition (or the watch's, or the remediator's), for nodes/status; its transition time
    moves only when its status does (to `since`, when given, else now)."""
    previous = condition(node, kind) or {}
    moved = previous.get("status") != status
    return {
        "status": {
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": stamp(now),
                    "lastTransitionTime": (
                        stamp(since or now) if moved else previous.get("lastTransitionTime", stamp(since or now))
                    ),
                }
            ]
        }
    }


def event(
    node: Node, *, namespace: str, key: str, warning: bool, reason: str, message: str, now: dt.datetime
) -> dict[str, Any]:
    """A core/v1 Event about the Node, in the tool's namespace. `key` names what it announces (a run id, a
    journal entry, a take-out's time): the Event's name is derived from it and the reason, so that posting
    it again is refused (409) instead of posted twice. The API server accepts an Event about an object
    without a namespace only in `default` (its validation of core/v1 Events), so the involved object
    carries the Event's own namespace."""
    name = node["metadata"]["name"]
    digest = hashlib.sha256(f"{reason}/{key}".encode()).hexdigest()[:16]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name[:236]}.{digest}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Node",
            "name": name,
            "uid": node["metadata"].get("uid", ""),
            "namespace": namespace,
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT, "host": name},
        "reportingComponent": COMPONENT,
        "reportingInstance": name,
        "firstTimestamp": stamp(now),
        "lastTimestamp": stamp(now),
        "count": 1,
    }


def last_result_value(outcome: Outcome) -> str:
    return json.dumps(
        {
            "run_id": outcome.run_id,
            "verdict": outcome.verdict,
            "codes": list(outcome.codes),
            "time": stamp(outcome.when),
            "command": outcome.command,
        },
        separators=(",", ":"),
    )


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
    except (ValueError, AttributeError):
        return None
