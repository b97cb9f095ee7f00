"""Pure parts of the fake API server (tests/kube_fake.py): how kube-apiserver answers in the other shapes a
client may ask for (PartialObjectMetadata, a server-side Table), what it checks of a coordination.k8s.io/v1
Lease, and who a request comes from. No state here; the server holds it.

Modelled on the documented behaviour: content negotiation by the Accept header's `as`, `g` and `v`
parameters (k8s.io/apiserver endpoints/handlers/response.go), with 406 NotAcceptable when nothing offered
can be served; the node printer's columns (pkg/printers/internalversion: Name, Status, Roles, Age,
Version; Status is Ready, NotReady or Unknown, then SchedulingDisabled when cordoned); `includeObject`
None, Metadata (the default) or Object; MicroTime parsed with RFC3339Micro (exactly six fractional
digits); Lease validation (pkg/apis/coordination/validation).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

META = "meta.k8s.io"
NODE_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique.", "priority": 0},
    {"name": "Status", "type": "string", "format": "", "description": "The status of the node", "priority": 0},
    {"name": "Roles", "type": "string", "format": "", "description": "The roles of the node", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is ...", "priority": 0},
    {"name": "Version", "type": "string", "format": "", "description": "Kubelet Version reported.", "priority": 0},
]
_MICRO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})")
_LEASE_FIELDS = {
    "holderIdentity": str,
    "leaseDurationSeconds": int,
    "acquireTime": str,
    "renewTime": str,
    "leaseTransitions": int,
    "strategy": str,
    "preferredHolder": str,
}


# -- content negotiation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the client asked the answer to be: the object itself, its PartialObjectMetadata, or a Table."""

    kind: str
    """"", "PartialObjectMetadata", "PartialObjectMetadataList" or "Table"."""
    version: str = "v1"


def accepted(header: str | None, *, listing: bool, watching: bool) -> Shape | None:
    """The first media type in `header` this request can be answered in; None: 406 NotAcceptable."""
    for part in (header or "application/json").split(","):
        media, *raw = (p.strip() for p in part.split(";"))
        params = dict(p.split("=", 1) for p in raw if "=" in p)
        if media not in ("application/json", "application/*", "*/*"):
            continue
        wanted = params.get("as", "")
        if not wanted:
            return Shape("")
        if params.get("g") != META or params.get("v") not in ("v1", "v1beta1"):
            continue
        if wanted == "Table" and not watching:
            return Shape("Table", params["v"])
        if wanted == "PartialObjectMetadataList" and listing and not watching:
            return Shape(wanted, params["v"])
        if wanted == "PartialObjectMetadata" and (watching or not listing):
            return Shape(wanted, params["v"])
    return None


def partial(obj: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"{META}/{version}",
        "metadata": copy.deepcopy(obj["metadata"]),
    }


def partial_list(items: list[dict[str, Any]], revision: str, version: str = "v1") -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadataList",
        "apiVersion": f"{META}/{version}",
        "metadata": {"resourceVersion": revision},
        "items": [partial(item, version) for item in items],
    }


def node_table(nodes: list[dict[str, Any]], revision: str, include: str, now: datetime, version: str = "v1") -> dict:
    """The nodes as `kubectl get nodes` receives them."""
    rows = []
    for node in nodes:
        row: dict[str, Any] = {"cells": node_cells(node, now)}
        if include == "Metadata":
            row["object"] = partial(node, version)
        elif include == "Object":
            row["object"] = copy.deepcopy(node)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"{META}/{version}",
        "metadata": {"resourceVersion": revision},
        "columnDefinitions": copy.deepcopy(NODE_COLUMNS),
        "rows": rows,
    }


def node_cells(node: dict[str, Any], now: datetime) -> list[str]:
    metadata, spec, status = node["metadata"], node.get("spec", {}), node.get("status", {})
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    words = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if spec.get("unschedulable"):
        words.append("SchedulingDisabled")
    labels = metadata.get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k)
    if labels.get("kubernetes.io/role"):
        roles.append(labels["kubernetes.io/role"])
    kubelet = (status.get("nodeInfo") or {}).get("kubeletVersion", "")
    return [metadata["name"], ",".join(words), ",".join(roles) or "<none>", _age(metadata, now), kubelet]


def _age(metadata: dict[str, Any], now: datetime) -> str:
    """duration.HumanDuration, to the unit kubectl shows."""
    try:
        created = datetime.fromisoformat(str(metadata.get("creationTimestamp", "")).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- leases -------------------------------------------------------------------------------------------------


def lease_errors(lease: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(path, reason, value, detail) for what the API server refuses in a Lease's spec."""
    spec = lease.get("spec") or {}
    errors = []
    for key, value in spec.items():
        kind = _LEASE_FIELDS.get(key)
        if kind is None or value is None:
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append((f"spec.{key}", "FieldValueInvalid", value, "must be an integer"))
        elif kind is str and not isinstance(value, str):
            errors.append((f"spec.{key}", "FieldValueInvalid", value, "must be a string"))
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errors.append(("spec.leaseDurationSeconds", "FieldValueInvalid", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if isinstance(transitions, int) and transitions < 0:
        errors.append(("spec.leaseTransitions", "FieldValueInvalid", transitions, "must be greater than or equal to 0"))
    return errors


def micro_time_error(lease: dict[str, Any]) -> str:
    """The decoding error of a MicroTime that RFC3339Micro does not parse, as the API server's 400 says it."""
    for key in ("acquireTime", "renewTime"):
        value = (lease.get("spec") or {}).get(key)
        if isinstance(value, str) and not _MICRO.fullmatch(value):
            return (
                f'Lease in version "v1" cannot be handled as a Lease: parsing time "{value}" as '
                f'"2006-01-02T15:04:05.000000Z07:00": cannot parse as ".000000"'
            )
    return ""


# -- who asks ----------------------------------------------------------------------------------------------


@dataclass
class Identity:
    """A bearer token's user, as the authenticator hands it on (userInfo), and what RBAC allows it."""

    user: str
    groups: tuple[str, ...] = ("system:serviceaccounts", "system:authenticated")
    node: str = ""
    """The token's node claim (a bound service account token of a pod on that node)."""
    rights: frozenset[tuple[str, str, str]] | None = None
    """(verb, resource[/subresource], namespace or "*") allowed; None: everything."""
    extra: dict[str, list[str]] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        extra = dict(self.extra)
        if self.node:
            extra["authentication.kubernetes.io/node-name"] = [self.node]
        return {"username": self.user, "groups": list(self.groups), "extra": extra}

    def allows(self, verb: str, resource: str, namespace: str) -> bool:
        if self.rights is None:
            return True
        return (verb, resource, "*") in self.rights or (verb, resource, namespace or "*") in self.rights


def rights(*lines: str) -> frozenset[tuple[str, str, str]]:
    """ "VERB[,VERB] RESOURCE[/SUB][ in NAMESPACE]" lines, as a role's rules read: ("get,patch nodes",
    "create events in gpu-burnin")."""
    found = set()
    for line in lines:
        words = line.split()
        namespace = words[3] if len(words) == 4 and words[2] == "in" else "*"
        for verb in words[0].split(","):
            found.add((verb, words[1], namespace))
    return frozenset(found)


def now() -> datetime:
    return datetime.now(UTC)
