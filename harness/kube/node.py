"""What gpu-burnin changes on a Node, computed from plain dicts: no API calls here.

Every change is a strategic merge patch that carries the resourceVersion it was
computed from, so a node changed in between is refused (409) rather than
overwritten. Taints are an atomic list: a patch that touches them writes the whole
list, built from the list just read with only this tool's taint added or removed,
so another writer's taint read with it survives, and one added after the read makes
the patch fail and be recomputed. Only this tool's taints, labels (gpu-burnin/...),
annotations, the GPUBurnIn condition and, when it cordons, spec.unschedulable are
ever written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from harness.errors import ConfigError

CONDITION = "GPUBurnIn"
WATCH_CONDITION = "GPUBurnInWatch"
"""The passive watch's condition (harness/watch/): True while it sees nothing wrong, False with the
finding codes, Unknown when it cannot read the GPUs; its heartbeat shows the watch is alive."""
LAST_RESULT = "gpu-burnin/last-result"
"""Annotation: the last run's id, verdict, finding codes and time, as JSON."""
INCOMPLETE_STREAK = "gpu-burnin/incomplete-streak"
"""Annotation: how many periodic runs in a row were incomplete."""
CORDONED = "gpu-burnin/cordoned"
"""Annotation: set when gpu-burnin cordoned the node, so retest uncordons only what it cordoned."""
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
        shown = name[:80].encode("unicode_escape").decode("ascii")
        raise ConfigError(f"{shown!r} is not a node name (lower-case letters, digits, '-' and '.')", option=option)
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Marks:
    """This tool's taints and labels on a node, as configured."""

    preflight_taint: Taint = Taint(f"{PREFIX}preflight", "", "NoSchedule")
    preflight_label: Label = Label(f"{PREFIX}preflight", "pending")
    unhealthy_taint: Taint = Taint(f"{PREFIX}unhealthy", "", "NoSchedule")
    unhealthy_label: Label = Label(f"{PREFIX}health", "unhealthy")

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
    verdict: str
    """"pass", "fail" or "incomplete"."""
    codes: tuple[str, ...]
    """The codes of the findings that decided it, most important first."""
    summary: str
    """One line: the first reason, with its remediation."""
    when: dt.datetime
    command: str


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


# -- patches ------------------------------------------------------------------------------


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
    node: Node, status: str, reason: str, message: str, now: dt.datetime, *, kind: str = CONDITION
) -> Patch:
    """The GPUBurnIn condition (or the watch's), for nodes/status; its transition time moves only when
    its status does."""
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
                    "lastTransitionTime": stamp(now) if moved else previous.get("lastTransitionTime", stamp(now)),
                }
            ]
        }
    }


def event(node: Node, *, warning: bool, reason: str, message: str, now: dt.datetime) -> dict[str, Any]:
    """A core/v1 Event on the Node, as kubectl describe node shows them."""
    name = node["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{secrets.token_hex(8)}", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"].get("uid", "")},
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
