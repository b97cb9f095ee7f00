"""ValidatingAdmissionPolicies as the API server applies them, run with cel-python on the
manifests `kubectl kustomize` renders, with an `authorizer` that answers from their RBAC.

    docs = render()                      # deploy/, or any overlay directory
    denied = admit(docs, user, groups, extra, "UPDATE", "nodes", "", old_node, new_node, "")
    # None: admitted; else (policy name, message)

What the API server does, in its order: a policy applies when one of its bindings says Deny,
its matchConstraints take the request (group, version, operation, resource and subresource)
and every matchCondition holds; then its variables (lazily, each seeing the ones before it)
and its validations. An expression that errors counts as failurePolicy says (Fail: denied).
What no policy of ours uses (namespace and object selectors, params, binding matchResources)
raises NotImplementedError rather than being judged wrongly.

The authorizer answers as Kubernetes RBAC would from the ClusterRoles, Roles and their
bindings among the manifests (system:masters holds everything, as in a cluster); Rbac also
lists what an account holds, as `kubectl auth can-i --list --as ...` would.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
TOKEN_NODE = "authentication.kubernetes.io/node-name"
"""The bound service account token's node claim, in the request's userInfo.extra (Kubernetes 1.30+)."""

Manifest = dict[str, Any]
Denial = tuple[str, str]
"""The policy that denied a request, and its message."""


def render(directory: Path = DEPLOY) -> list[Manifest]:
    """`kubectl kustomize directory`, parsed; a fresh copy each call (the render itself is cached)."""
    return copy.deepcopy(_render(str(directory)))


@functools.cache
def _render(directory: str) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize`")
    done = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    # kustomize warns on stderr about deprecated fields; a render must not need any.
    if done.stderr:
        raise RuntimeError(f"kubectl kustomize {directory} warned: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


OVERLAYS = Path(__file__).resolve().parent / "data" / "kustomize"
RENDERS = {
    "deploy": DEPLOY,
    "namespace gpu-ops": OVERLAYS / "namespace",
    "namePrefix prod-": OVERLAYS / "name-prefix",
}
"""deploy/ and the overlays that rename everything in it, as a site's would (tests/data/kustomize/)."""
COMPONENTS = ("preflight", "periodic", "watch", "remediator")
AGENTS = ("preflight", "periodic", "watch")
"""The node agents: pods on GPU nodes."""


def service_account(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def service_account_groups(namespace: str) -> list[str]:
    """The groups the API server gives every service account of `namespace`."""
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


@dataclasses.dataclass(frozen=True)
class Identity:
    """A component's account, found as the cluster finds it: from its pods' serviceAccountName."""

    user: str
    namespace: str

    @property
    def groups(self) -> list[str]:
        return service_account_groups(self.namespace)


def pod_spec(workload: Manifest) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def identity(manifests: Sequence[Manifest], component: str) -> Identity:
    """The account the pods of `component` (its app.kubernetes.io/component label) run as."""
    (workload,) = [
        m
        for m in manifests
        if m["kind"] in ("DaemonSet", "CronJob", "Deployment")
        and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    namespace = workload["metadata"]["namespace"]
    return Identity(service_account(namespace, pod_spec(workload)["serviceAccountName"]), namespace)


def token(node: str | None) -> dict[str, list[str]]:
    """The userInfo.extra of a pod's bound token; `node`: the node it names (None: no node claim,
    as a token made by hand or on a cluster before 1.30)."""
    extra = {
        "authentication.kubernetes.io/pod-name": ["gpu-burnin-x7k2p"],
        "authentication.kubernetes.io/pod-uid": ["0b3c6a9e-8f4d-4d3c-9a51-3c2f4b1e7d20"],
        "authentication.kubernetes.io/credential-id": ["JTI=9c1b6f0e-4d2a-4e57-b0a1-8f3e2d1c0b9a"],
    }
    if node is not None:
        extra[TOKEN_NODE] = [node]
        extra["authentication.kubernetes.io/node-uid"] = ["7d1e0c2b-3a4f-4b5c-8d6e-9f0a1b2c3d4e"]
    return extra


# -- RBAC ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, order=True)
class Grant:
    """One permission, as a line of `kubectl auth can-i --list`: '*' stands for every value."""

    namespace: str
    """'' for cluster-wide (a ClusterRoleBinding), else the one namespace a RoleBinding grants in."""
    group: str
    resource: str
    """With its subresource, as RBAC writes it: nodes/status."""
    verb: str
    names: tuple[str, ...] = ()
    """resourceNames: only these objects; () for any."""


class Rbac:
    def __init__(self, manifests: Sequence[Manifest]):
        self._cluster_roles = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ClusterRole"}
        self._roles = {
            (m["metadata"].get("namespace", ""), m["metadata"]["name"]): m for m in manifests if m["kind"] == "Role"
        }
        self._bindings = [m for m in manifests if m["kind"] in ("ClusterRoleBinding", "RoleBinding")]
        for role in self._cluster_roles.values():
            if role.get("aggregationRule"):
                raise NotImplementedError(f"ClusterRole {role['metadata']['name']}: aggregationRule")

    def grants(self, user: str, groups: Iterable[str]) -> frozenset[Grant]:
        """Every permission `user` holds through the manifests' bindings."""
        return self._grants(user, frozenset(groups))

    @functools.cache  # noqa: B019 (an Rbac lives as long as its manifests, in the cache below)
    def _grants(self, user: str, groups: frozenset[str]) -> frozenset[Grant]:
        found: set[Grant] = set()
        for binding in self._bindings:
            if not any(_subject_is(s, user, groups) for s in binding.get("subjects") or []):
                continue
            namespace = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
            ref = binding["roleRef"]
            if ref["kind"] == "ClusterRole":
                role = self._cluster_roles.get(ref["name"])
            else:
                role = self._roles.get((namespace, ref["name"]))
            for rule in (role or {}).get("rules") or []:
                if "nonResourceURLs" in rule:
                    continue
                names = tuple(rule.get("resourceNames") or ())
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            found.add(Grant(namespace, group, resource, verb, names))
        return frozenset(found)

    def allowed(
        self,
        user: str,
        groups: Iterable[str],
        *,
        verb: str,
        group: str,
        resource: str,
        subresource: str = "",
        namespace: str = "",
        name: str = "",
    ) -> bool:
        """As the RBAC authorizer answers: `namespace` '' asks about the whole cluster, where only
        ClusterRoleBindings grant; `name` '' asks about every object (a list, a create)."""
        groups = frozenset(groups)
        if "system:masters" in groups:
            return True
        wanted = f"{resource}/{subresource}" if subresource else resource
        return any(
            g.namespace in ("", namespace)
            and g.group in ("*", group)
            and _resource_matches(g.resource, wanted)
            and g.verb in ("*", verb)
            and (not g.names or name in g.names)
            for g in self._grants(user, groups)
        )


def _subject_is(subject: Mapping[str, Any], user: str, groups: frozenset[str]) -> bool:
    if subject["kind"] == "User":
        return bool(subject["name"] == user)
    if subject["kind"] == "Group":
        return subject["name"] in groups
    if subject["kind"] == "ServiceAccount":
        return service_account(subject.get("namespace", ""), subject["name"]) == user
    raise NotImplementedError(f"a subject of kind {subject['kind']}")


def _resource_matches(granted: str, wanted: str) -> bool:
    """RBAC's rule: '*' is every resource and subresource; 'pods/*', '*/scale' one side of it."""
    if granted in ("*", wanted):
        return True
    resource, _, subresource = wanted.partition("/")
    return bool(subresource) and granted in (f"{resource}/*", f"*/{subresource}")


# -- the authorizer CEL library (authorizer.group(g).resource(r).check(verb).allowed()) -------


@dataclasses.dataclass(frozen=True)
class _Authorizer:
    rbac: Rbac
    user: str
    groups: frozenset[str]
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclasses.dataclass(frozen=True)
class _Decision:
    allowed: bool


def _check(target: _Authorizer, verb: str) -> _Decision:
    return _Decision(
        target.rbac.allowed(
            target.user,
            target.groups,
            verb=str(verb),
            group=target.group,
            resource=target.resource,
            subresource=target.subresource,
            namespace=target.namespace,
            name=target.name,
        )
    )


def _setter(field: str) -> Any:
    return lambda target, value: dataclasses.replace(target, **{field: str(value)})


AUTHORIZER_FUNCTIONS: dict[str, Any] = {
    "group": _setter("group"),
    "resource": _setter("resource"),
    "subresource": _setter("subresource"),
    "namespace": _setter("namespace"),
    "name": _setter("name"),
    "check": _check,
    "allowed": lambda decision: celtypes.BoolType(decision.allowed),
    "reason": lambda decision: celtypes.StringType(""),
    "errored": lambda decision: celtypes.BoolType(False),
}


# -- the policies ------------------------------------------------------------------------------


@functools.cache
def _program(expression: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression), functions=AUTHORIZER_FUNCTIONS)


class ExpressionError(Exception):
    """An expression that errored or gave no bool: the API server applies failurePolicy."""


def evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    try:
        return _program(expression).evaluate(dict(activation))
    except CELEvalError as err:
        raise ExpressionError(f"{expression!r}: {err}") from err


def truth(expression: str, activation: Mapping[str, Any]) -> bool:
    result = evaluate(expression, activation)
    if not isinstance(result, celtypes.BoolType):
        raise ExpressionError(f"{expression!r} gave {result!r}, not a bool")
    return bool(result)


class _Variables(celtypes.MapType):
    """`variables`, each evaluated when first read, as the API server does."""

    def __init__(self, declared: Sequence[Mapping[str, str]], activation: dict[str, Any]):
        super().__init__()
        self._declared = {v["name"]: v["expression"] for v in declared}
        self._activation = {**activation, "variables": self}

    def __getitem__(self, key: Any) -> Any:
        if not super().__contains__(key) and key in self._declared:
            value = evaluate(self._declared[key], self._activation)
            super().__setitem__(celtypes.StringType(key), value)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        return key in self._declared


@dataclasses.dataclass(frozen=True)
class Request:
    """What admission is told about one write."""

    user: str
    groups: tuple[str, ...]
    extra: Mapping[str, Sequence[str]]
    operation: str
    resource: str
    subresource: str
    namespace: str
    group: str = ""
    version: str = "v1"
    name: str = ""
    kind: str = ""

    def as_cel(self) -> dict[str, Any]:
        user_info: dict[str, Any] = {"username": self.user, "groups": list(self.groups)}
        # A message's map field reads as absent while empty: has(request.userInfo.extra) is false.
        if self.extra:
            user_info["extra"] = {k: list(v) for k, v in self.extra.items()}
        kind = {"group": self.group, "version": self.version, "kind": self.kind}
        resource = {"group": self.group, "version": self.version, "resource": self.resource}
        return {
            "kind": kind,
            "resource": resource,
            "subResource": self.subresource,
            "requestKind": kind,
            "requestResource": resource,
            "requestSubResource": self.subresource,
            "name": self.name,
            "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": user_info,
            "dryRun": False,
        }


class Admission:
    """deploy/'s policies and RBAC, read once; `admit` judges one write."""

    def __init__(self, manifests: Sequence[Manifest]):
        self.rbac = Rbac(manifests)
        policies = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ValidatingAdmissionPolicy"}
        enforced = set()
        for binding in (m for m in manifests if m["kind"] == "ValidatingAdmissionPolicyBinding"):
            spec = binding["spec"]
            if spec.get("matchResources") or spec.get("paramRef"):
                raise NotImplementedError(f"binding {binding['metadata']['name']}: matchResources or paramRef")
            if "Deny" in spec["validationActions"]:
                enforced.add(spec["policyName"])
        self.policies = [policies[name] for name in sorted(enforced) if name in policies]
        for policy in self.policies:
            spec = policy["spec"]
            constraints = spec.get("matchConstraints", {})
            if spec.get("paramKind") or constraints.get("namespaceSelector") or constraints.get("objectSelector"):
                raise NotImplementedError(f"policy {policy['metadata']['name']}: params or selectors")

    def admit(self, request: Request, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> Denial | None:
        activation: dict[str, Any] = {
            "request": json_to_cel(request.as_cel()),
            "object": json_to_cel(dict(new)) if new is not None else None,
            "oldObject": json_to_cel(dict(old)) if old is not None else None,
            "authorizer": _Authorizer(self.rbac, request.user, frozenset(request.groups)),
        }
        for policy in self.policies:
            if not _takes(policy["spec"].get("matchConstraints", {}), request):
                continue
            denied = self._judge(policy, activation)
            if denied is not None:
                return denied
        return None

    @staticmethod
    def _judge(policy: Manifest, activation: dict[str, Any]) -> Denial | None:
        name, spec = policy["metadata"]["name"], policy["spec"]
        fail_closed = spec.get("failurePolicy", "Fail") == "Fail"
        try:
            if not all(truth(c["expression"], activation) for c in spec.get("matchConditions", [])):
                return None
            activation = {**activation, "variables": _Variables(spec.get("variables", []), activation)}
            for validation in spec["validations"]:
                if not truth(validation["expression"], activation):
                    message = validation.get("message") or f"failed expression: {validation['expression']}"
                    return name, message
        except ExpressionError as err:
            return (name, f"expression error: {err}") if fail_closed else None
        return None


def _takes(constraints: Mapping[str, Any], request: Request) -> bool:
    def matches(rule: Mapping[str, Any]) -> bool:
        wanted = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
        resources = rule.get("resources", [])
        resource_ok = "*/*" in resources or wanted in resources or (not request.subresource and "*" in resources)
        if request.subresource:
            resource_ok = resource_ok or any(
                r in (f"{request.resource}/*", f"*/{request.subresource}") for r in resources
            )
        return (
            resource_ok
            and any(g in ("*", request.group) for g in rule.get("apiGroups", []))
            and any(v in ("*", request.version) for v in rule.get("apiVersions", []))
            and any(o in ("*", request.operation) for o in rule.get("operations", []))
        )

    return any(matches(r) for r in constraints.get("resourceRules", [])) and not any(
        matches(r) for r in constraints.get("excludeResourceRules", [])
    )


_ADMISSIONS: dict[int, tuple[Sequence[Manifest], Admission]] = {}


def admission(manifests: Sequence[Manifest]) -> Admission:
    """The Admission of these manifests, built once per list (kept, so its id is not reused)."""
    held = _ADMISSIONS.get(id(manifests))
    if held is None or held[0] is not manifests:
        held = (manifests, Admission(manifests))
        _ADMISSIONS[id(manifests)] = held
    return held[1]


def admit(
    manifests: Sequence[Manifest],
    user: str,
    groups: Sequence[str],
    extra: Mapping[str, Sequence[str]],
    operation: str,
    resource: str,
    subresource: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    namespace: str,
    *,
    group: str = "",
    version: str = "v1",
) -> Denial | None:
    """None when every policy among `manifests` admits the write; else (policy, message).

    `old` is None for a CREATE, `new` None for a DELETE; `namespace` '' for a cluster-scoped
    object (a Node)."""
    subject = new if new is not None else old or {}
    request = Request(
        user=user,
        groups=tuple(groups),
        extra=extra,
        operation=operation,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        group=group,
        version=version,
        name=subject.get("metadata", {}).get("name", ""),
        kind=subject.get("kind", ""),
    )
    return admission(manifests).admit(request, old, new)
