"""The "who may do what" of docs/kubernetes.md (the contract of issue 17), as a Python admission
hook for the fake API server: every node write and every Event of the flows tests is checked against it,
so that a flow that writes what the admission policies would refuse fails here first.

The deploy/ policies (CEL, evaluated with cel-python by tests/admission.py) are the real thing; this is
the contract they and the code share, written once more from the code's side. A component is known here
by its service account's name, as the fake's identities give it (the real policies ask the authorizer).
Where tests/admission.py and kubectl are at hand, `install` enforces deploy/'s policies themselves, and
a write on which the two disagree fails the test: neither side can drift from the contract unseen.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from tests.kube_fake import FakeApiServer
from tests.kube_fake_parts import rights

PREFIX = "gpu-burnin/"
NAMESPACE = "gpu-burnin"
NODE_CLAIM = "authentication.kubernetes.io/node-name"
PREFLIGHT_TAINT = {"key": "gpu-burnin/preflight", "effect": "NoSchedule"}
UNHEALTHY_TAINT = {"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}
HEALTH, SEVERITY, FRESH, PREFLIGHT = (
    "gpu-burnin/health",
    "gpu-burnin/severity",
    "gpu-burnin/fresh",
    "gpu-burnin/preflight",
)
RANK = {None: 0, "fail": 1, "critical": 2}
CONDITIONS = {
    "preflight": "GPUBurnIn",
    "periodic": "GPUBurnIn",
    "watch": "GPUBurnInWatch",
    "remediator": "GPUBurnInRemediation",
}
ANNOTATIONS = {
    "preflight": {"gpu-burnin/last-result"},
    "periodic": {"gpu-burnin/last-result", "gpu-burnin/incomplete-streak", "gpu-burnin/requested"},
    "watch": {"gpu-burnin/watch", "gpu-burnin/requested"},
    "remediator": {"gpu-burnin/cordoned"},
}
AGENT_RIGHTS = rights("get,patch nodes", "patch nodes/status", "create events in gpu-burnin")
REMEDIATOR_RIGHTS = rights(
    "get,list,watch,patch nodes",
    "patch nodes/status",
    "get,list pods",
    "create pods/eviction",
    "get,create,update leases in gpu-burnin",
    "create events in gpu-burnin",
)


def user(component: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{component}"


def install(server: FakeApiServer) -> None:
    """Check every node write and Event of `server` against the contract (and deploy/'s policies)."""
    server.admission = _deploy_policies() or admit


@functools.cache
def _deploy_policies() -> Callable[..., str | None] | None:
    """deploy/'s ValidatingAdmissionPolicies through cel-python, cross-checked with `admit`; None where they
    cannot be evaluated here (no tests/admission.py, no kubectl to render deploy/)."""
    try:
        from tests import admission  # type: ignore[attr-defined]
    except ImportError:
        return None
    if shutil.which("kubectl") is None:
        return None
    docs = admission.render()

    def both(
        who: Mapping[str, Any], old: dict[str, Any] | None, new: dict[str, Any], resource: str, sub: str
    ) -> str | None:
        namespace = new.get("metadata", {}).get("namespace", "") if resource == "events" else ""
        operation = "CREATE" if old is None else "UPDATE"
        groups, extra = who["groups"], who["extra"]
        denied = admission.admit(docs, who["username"], groups, extra, operation, resource, sub, old, new, namespace)
        mine = admit(who, old, new, resource, sub)
        if (denied is None) != (mine is None):
            raise AssertionError(f"deploy/'s policies ({denied}) and the contract's model ({mine}) disagree")
        return None if denied is None else f"ValidatingAdmissionPolicy '{denied[0]}' denied request: {denied[1]}"

    return both


def agent_token(server: FakeApiServer, component: str, node: str) -> str:
    """A token of `component`'s service account, bound to a pod on `node`, with the agents' RBAC."""
    token = f"{component}@{node}"
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated")
    server.identity(token, user(component), groups=groups, node=node, rights=AGENT_RIGHTS)
    return token


def remediator_token(server: FakeApiServer, replica: str = "remediator-0") -> str:
    token = f"remediator@{replica}"
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated")
    server.identity(token, user("remediator"), groups=groups, rights=REMEDIATOR_RIGHTS)
    return token


def admit(
    who: Mapping[str, Any], old: dict[str, Any] | None, new: dict[str, Any], resource: str, sub: str
) -> str | None:
    component = next((c for c in CONDITIONS if who["username"] == user(c)), "")
    if not component:
        return None  # a person (retest, status) or another controller: the policies do not match them
    problems = _event(who, component, new) if resource == "events" else _node(who, component, old or {}, new, sub)
    return f"ValidatingAdmissionPolicy 'gpu-burnin-{component}' denied request: {problems[0]}" if problems else None


def _event(who: Mapping[str, Any], component: str, event: dict[str, Any]) -> list[str]:
    found = []
    involved = event.get("involvedObject") or {}
    namespace = event.get("metadata", {}).get("namespace")
    if namespace != NAMESPACE:
        found.append(f"events only in {NAMESPACE}, not {namespace}")
    if involved.get("kind") != "Node" or involved.get("namespace") != namespace:
        found.append("events only about a Node, its namespace the event's")
    if component != "remediator" and involved.get("name") != _claim(who):
        found.append(f"an event about node {involved.get('name')} from a pod on {_claim(who)}")
    if event.get("reportingComponent") != "gpu-burnin" or (event.get("source") or {}).get("component") != "gpu-burnin":
        found.append("reportingComponent and source.component must be gpu-burnin")
    return found


def _node(who: Mapping[str, Any], component: str, old: dict[str, Any], new: dict[str, Any], sub: str) -> list[str]:
    found = []
    if component != "remediator" and new["metadata"]["name"] != _claim(who):
        found.append(f"node {new['metadata']['name']} is not the pod's own node {_claim(who)}")
    for key in ("ownerReferences", "finalizers"):
        if old["metadata"].get(key) != new["metadata"].get(key):
            found.append(f"metadata.{key} changed")
    own = CONDITIONS[component]
    if _status_without(old, own) != _status_without(new, own):
        found.append(f"status changed beyond the {own} condition")
    for kind in ("labels", "annotations"):
        before, after = old["metadata"].get(kind) or {}, new["metadata"].get(kind) or {}
        for key in set(before) | set(after):
            if before.get(key) != after.get(key) and not key.startswith(PREFIX):
                found.append(f"{kind[:-1]} {key} is not gpu-burnin's")
        if kind == "annotations":
            for key, value in after.items():
                if key.startswith(PREFIX) and len(value.encode()) > 4096:
                    found.append(f"annotation {key} over 4096 bytes")
                if key.startswith(PREFIX) and before.get(key) != value and key not in ANNOTATIONS[component]:
                    found.append(f"annotation {key} is not {component}'s")
            for key in set(before) - set(after):
                if key.startswith(PREFIX) and (key not in ANNOTATIONS[component] or key == "gpu-burnin/requested"):
                    found.append(f"annotation {key} removed")
    found += _labels(component, old["metadata"].get("labels") or {}, new["metadata"].get("labels") or {})
    found += _spec(component, old.get("spec") or {}, new.get("spec") or {})
    return found


def _labels(component: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    found = []
    for key in {k for k in set(before) | set(after) if k.startswith(PREFIX) and before.get(k) != after.get(k)}:
        was, now = before.get(key), after.get(key)
        if key == PREFLIGHT and component == "preflight" and now in (None, "failed", "incomplete"):
            continue
        if key == HEALTH and component in ("periodic", "watch") and was is None and now == "failing":
            continue
        if key == HEALTH and component == "remediator" and was == "failing" and now == "unhealthy":
            continue
        if key == SEVERITY and component in ("periodic", "watch") and RANK.get(now, -1) > RANK.get(was, 0):
            continue
        if key == FRESH and component == "watch" and now in (None, "true"):
            continue
        found.append(f"label {key} {was!r} -> {now!r} is not {component}'s to write")
    return found


def _spec(component: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    found = []
    if bool(before.get("unschedulable")) != bool(after.get("unschedulable")):
        if not (component == "remediator" and after.get("unschedulable")):
            found.append(f"spec.unschedulable {before.get('unschedulable')} -> {after.get('unschedulable')}")
    old_taints, new_taints = before.get("taints") or [], after.get("taints") or []
    added = [t for t in new_taints if t not in old_taints]
    removed = [t for t in old_taints if t not in new_taints]
    allowed = {"preflight": [PREFLIGHT_TAINT], "remediator": [UNHEALTHY_TAINT]}.get(component, [])
    for taint in added:
        if {"key": taint.get("key"), "effect": taint.get("effect")} not in allowed or taint.get("value"):
            found.append(f"taint {taint} added")
    for taint in removed:
        if component != "preflight" or {"key": taint.get("key"), "effect": taint.get("effect")} != PREFLIGHT_TAINT:
            found.append(f"taint {taint} removed")
    rest = {k: v for k, v in after.items() if k not in ("taints", "unschedulable")}
    if rest != {k: v for k, v in before.items() if k not in ("taints", "unschedulable")}:
        found.append("spec changed beyond taints and unschedulable")
    return found


def _status_without(node: dict[str, Any], kind: str) -> str:
    status = copy.deepcopy(node.get("status") or {})
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    return json.dumps(status, sort_keys=True)


def _claim(who: Mapping[str, Any]) -> str:
    return str((who.get("extra", {}).get(NODE_CLAIM) or [""])[0])
