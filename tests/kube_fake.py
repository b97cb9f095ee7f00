"""A stateful fake Kubernetes API server that the real `kubernetes` client talks to over HTTP on 127.0.0.1.

The harness's Kubernetes code is tested against this rather than against mocks of the client, so that
the client's own serialisation, content types, error handling and retries are exercised as they are
against a cluster. It models the documented kube-apiserver semantics for what the harness uses: nodes
and nodes/status (get, list with label and field selectors, strategic merge patches: the only patch the
harness sends, harness/kube/api.py; other patch types are 415, a node is never PUT: 405), lists of
nodes as PartialObjectMetadata or as a server-side Table (the Accept header's `as`), watches of nodes
(chunked JSON lines from a resourceVersion, label and field selectors, ADDED/MODIFIED/DELETED as
objects enter, change in and leave the selection, bookmarks, 410 Expired for a version compacted
away), core/v1 events (create, get, list), pods (list by field selector, delete) and their eviction
subresource (PodDisruptionBudgets refuse with 429, the pod is deleted gracefully),
coordination.k8s.io/v1 leases (get, create, update; MicroTime strictness),
optimistic concurrency on resourceVersion, bearer tokens each with its own user, groups and node
claim (and, where given, its RBAC rights), RBAC denials, an admission hook on every write of a node
and every event created (as ValidatingAdmissionPolicies see them), and Status objects for every
error. Tests script the rest of the world through it: injected failures, other writers, forbidden verbs.
"""

from __future__ import annotations

import collections
import copy
import json
import random
import re
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from tests import kube_fake_parts as parts
from tests.kube_fake_parts import Identity

DEFAULT_USER = "system:serviceaccount:gpu-burnin:gpu-burnin"
"""Who the token authenticates as: RBAC denials name this user."""
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "gpu-burnin")
"""Namespaces that exist: creating an event elsewhere is 404, as NamespaceLifecycle admission answers."""

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
Admission = Callable[[dict[str, Any], "dict[str, Any] | None", dict[str, Any], str, str], "str | None"]
"""(userInfo, the object before or None, the object after, resource, subresource) -> None to admit, or the
message of a denial (a ValidatingAdmissionPolicy's "ValidatingAdmissionPolicy 'p' denied request: ...")."""

_CONFLICT = (
    'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
    "please apply your changes to the latest version and try again"
)
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MESSAGES = {
    400: "the server rejected our request for an unknown reason",
    401: "Unauthorized",
    403: "forbidden",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    422: "the server rejected our request due to an error in our request",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected failure",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing the request",
}

# Strategic merge patch strategies of the Node fields that have one (k8s.io/api core/v1 patchStrategy tags).
# spec.taints has none: it is an atomic list, replaced whole, like every list not named here.
_MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
}
_MERGED_SCALAR_LISTS = frozenset({("metadata", "finalizers"), ("spec", "podCIDRs")})
_STRING_MAPS = frozenset({"labels", "annotations", "capacity", "allocatable"})
"""Go maps, not structs: their entries are kept when empty, where omitempty drops empty struct fields."""

_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_NODE_FIELDS = frozenset({"metadata.name", "spec.unschedulable"})
_INVOLVED_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
_EVENT_FIELDS = frozenset(
    {"metadata.name", "metadata.namespace", "reason", "reportingComponent", "source", "type"}
    | {f"involvedObject.{f}" for f in _INVOLVED_FIELDS}
)
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PARTS = ("metadata", "spec", "status")
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NODE_PATH = re.compile(r"/api/v1/nodes/([^/]+)(?:/(status))?")
_EVENTS_PATH = re.compile(r"/api/v1(?:/namespaces/([^/]+))?/events")
_EVENT_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/events/([^/]+)")
_PODS_PATH = re.compile(r"/api/v1(?:/namespaces/([^/]+))?/pods")
_EVICTION_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction")
_POD_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)")
_LEASES_PATH = re.compile(r"/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?")
LEASES = "leases.coordination.k8s.io"
_POD_FIELDS = frozenset({"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"})
_PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


@dataclass
class Request:
    """One request as the server saw it, for tests that assert what the client sent and in what order."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any
    """The parsed JSON body, or None when there was none or it was not JSON."""
    status: int = 0
    """The status answered; 0 while the request is being served."""


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    remaining: int

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.pattern.fullmatch(path) is not None


@dataclass
class _Failure(_Rule):
    status: int
    headers: dict[str, str]
    message: str
    delay: float


@dataclass
class _Hook(_Rule):
    action: Callable[[FakeApiServer], None]


_R = TypeVar("_R", bound=_Rule)


@dataclass
class _Response:
    code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Stream(_Response):
    """A watch: `body` yields its events, each sent as one JSON line of a chunked answer."""


class _ApiError(Exception):
    """A failure the API server answers with a Status object."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def response(self) -> _Response:
        return _Response(self.code, _status(self.code, self.reason, self.message, self.details))


@dataclass(frozen=True)
class _FieldError:
    """One validation failure, rendered as apimachinery's field.Error renders it."""

    path: str
    reason: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        label = {
            "FieldValueInvalid": "Invalid value",
            "FieldValueRequired": "Required value",
            "FieldValueNotSupported": "Unsupported value",
            "FieldValueDuplicate": "Duplicate value",
            "FieldValueTooLong": "Too long",
        }[self.reason]
        text = (
            label
            if self.reason in ("FieldValueRequired", "FieldValueTooLong")
            else f"{label}: {_canonical(self.value)}"
        )
        return f"{text}: {self.detail}" if self.detail else text

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body(), "field": self.path}


class _SelectorError(Exception):
    """A label selector that labels.Parse rejects."""


class FakeApiServer:
    """The fake API server: state (nodes, events, a global resourceVersion counter), an HTTP front end in a
    daemon thread, and the knobs tests use to script failures, races and RBAC."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        user: str = DEFAULT_USER,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        seed: int = 0,
        history: int = 5000,
        bookmark_s: float = 0.2,
    ) -> None:
        self.token = token
        self.user = user
        self._identities: dict[str, Identity] = {token: Identity(user, groups=("system:authenticated",))}
        self.admission: Admission | None = None
        """Called on every node update or patch (status included) and every event created; dry runs too."""
        self._namespaces = frozenset(namespaces)
        self._random = random.Random(seed)  # uids and generated names: the same on every run
        self._lock = threading.RLock()  # re-entrant: edit_node's change may read the server
        self._revision = 0
        self._nodes: dict[str, dict[str, Any]] = {}
        self._events: dict[tuple[str, str], dict[str, Any]] = {}
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._budgets: dict[tuple[str, str], str] = {}
        self._leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: collections.deque[tuple[int, str, dict[str, Any] | None, dict[str, Any] | None]] = (
            collections.deque(maxlen=history)
        )
        """Changes of nodes, oldest first: (revision, type, before, after), for watches."""
        self._floor = 0
        """Watches from a revision below this are answered 410 Expired (their changes are no longer kept)."""
        self._changed = threading.Condition(self._lock)
        self.bookmark_s = bookmark_s
        """A watch that asked for bookmarks gets one after this long without events."""
        self._requests: list[Request] = []
        self._failures: list[_Failure] = []
        self._before: list[_Hook] = []
        self._after: list[_Hook] = []
        self._forbidden: set[tuple[str, str, str]] = set()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("the fake API server is already running")
        self._stopping.clear()
        self._httpd = _HttpServer(("127.0.0.1", 0), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name=f"fake-apiserver {self.url}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close kept-alive connections and join every thread, so none outlives a test."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        with self._lock:
            self._stopping.set()  # wakes delayed failures; refuses connections accepted from now on
            connections = list(self._connections)
        httpd.shutdown()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # a handler waiting for the next request reads EOF
            except OSError:
                pass
        httpd.server_close()  # joins the handler threads, now all on their way out
        thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the fake API server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig for this server (to `path`, or `path`/kubeconfig for a directory); token ""
        leaves the user without credentials."""
        target = Path(path)
        if target.is_dir():
            target = target / "kubeconfig"
        credential = self.token if token is None else token
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": credential} if credential else {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        target.write_text(json.dumps(document, indent=2))  # JSON is YAML: the client's loader reads it
        return target

    def identity(
        self,
        token: str,
        user: str,
        *,
        groups: Iterable[str] = ("system:serviceaccounts", "system:authenticated"),
        node: str = "",
        rights: frozenset[tuple[str, str, str]] | None = None,
    ) -> Identity:
        """Another bearer token, for another user: `node` is its node claim (a pod's bound token), `rights` what
        RBAC allows it (tests.kube_fake_parts.rights; None: everything). Write its kubeconfig with
        `kubeconfig(path, token=token)`."""
        found = Identity(user, groups=tuple(groups), node=node, rights=rights)
        with self._lock:
            self._identities[token] = found
        return found

    def revoke(self, token: str) -> None:
        """The token is no longer valid (its pod was deleted): every request with it is 401 from now on."""
        with self._lock:
            self._identities.pop(token, None)

    # -- state, as the test sees and changes it --------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        taints: Iterable[Mapping[str, Any]] | None = None,
        unschedulable: bool = False,
        conditions: Iterable[Mapping[str, Any]] | None = None,
        created: str | None = None,
        status: Mapping[str, Any] | None = None,
        managed_fields: Iterable[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A Node as a kubelet registers one: standard labels and annotations under the given ones, a Ready
        condition unless one is given, 8 GPUs in capacity; `status`'s fields over those (images, nodeInfo),
        and `managed_fields` as server-side apply keeps them. Raises ValueError for what the server would
        reject."""
        stamp = created or _now()
        merged: list[dict[str, Any]] = [
            {
                "type": "Ready",
                "status": "True",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
            }
        ]
        for given in conditions or ():
            condition = {"lastHeartbeatTime": stamp, "lastTransitionTime": stamp, **copy.deepcopy(dict(given))}
            merged = [c for c in merged if c["type"] != condition.get("type")] + [condition]
        spec: dict[str, Any] = {}
        if taints is not None:
            spec["taints"] = [copy.deepcopy(dict(t)) for t in taints]
        if unschedulable:
            spec["unschedulable"] = True
        resources = {"cpu": "128", "memory": "2113323440Ki", "nvidia.com/gpu": "8", "pods": "110"}
        node: dict[str, Any] = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "creationTimestamp": stamp,
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    **(labels or {}),
                },
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                    **(annotations or {}),
                },
            },
            "spec": spec,
            "status": {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": merged,
                "addresses": [{"type": "Hostname", "address": name}],
                **copy.deepcopy(dict(status or {})),
            },
        }
        if managed_fields is not None:
            node["metadata"]["managedFields"] = [copy.deepcopy(dict(f)) for f in managed_fields]
        node = _normalized_node(node)
        errors = _node_errors(node)
        if errors:
            raise ValueError(_invalid("Node", name, errors).message)
        with self._lock:
            if name in self._nodes:
                raise ValueError(f'nodes "{name}" already exists')
            node["metadata"]["uid"] = self._uid()
            node["metadata"]["resourceVersion"] = self._next_revision()
            self._nodes[name] = node
            self._record("ADDED", None, node)
            return copy.deepcopy(node)

    def node(self, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._nodes[name])

    def edit_node(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Another writer: `change` mutates a copy of the stored node, which then replaces it with a new
        resourceVersion (watchers see it change)."""
        with self._lock:
            before = self._nodes[name]
            node = copy.deepcopy(before)
            change(node)
            node = _normalized_node(node)
            node["metadata"]["resourceVersion"] = self._next_revision()
            self._nodes[name] = node
            self._record("MODIFIED", before, node)

    def together(self) -> threading.RLock:
        """`with server.together():` changes made inside land as one burst: requests (watches included)
        wait until the block ends."""
        return self._lock

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._leases.get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def compact(self) -> None:
        """etcd compacted its history (and the watch cache moved on): a watch from any resourceVersion before
        now is answered 410 Expired, and open watches end with that error."""
        with self._lock:
            self._floor = self._revision + 1
            self._changed.notify_all()

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        node: str,
        gpus: int = 0,
        phase: str = "Running",
        owner: str = "",
        annotations: Mapping[str, str] | None = None,
        grace_s: int = 30,
        labels: Mapping[str, str] | None = None,
        status: Mapping[str, Any] | None = None,
        for_node: str = "",
    ) -> dict[str, Any]:
        """A pod bound to `node`, its one container limited to `gpus` nvidia.com/gpu; `owner`: the kind of
        its controller (ReplicaSet, DaemonSet, ...), none when empty. `for_node`: a DaemonSet's pod not yet
        bound (`node` empty), aimed at that node as the DaemonSet controller does, by a node affinity on
        metadata.name; `status`: its status as the kubelet or the scheduler left it (phase, conditions,
        containerStatuses)."""
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "annotations": dict(annotations or {}),
            "labels": dict(labels or {}),
        }
        if owner:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner,
                    "name": f"{name}-owner",
                    "uid": self._uid(),
                    "controller": True,
                }
            ]
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": grace_s,
                "containers": [{"name": "main", "image": "registry.example/train:1", "resources": resources}],
            },
            "status": {"phase": phase, **dict(status or {})},
        }
        if for_node:
            term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [for_node]}]}
            required = {"nodeSelectorTerms": [term]}
            pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
        with self._lock:
            if (namespace, name) in self._pods:
                raise ValueError(f'pods "{name}" already exists')
            metadata.update(uid=self._uid(), creationTimestamp=_now(), resourceVersion=self._next_revision())
            self._pods[(namespace, name)] = pod = _pruned(pod)
            return copy.deepcopy(pod)

    @property
    def pods(self) -> list[dict[str, Any]]:
        """Every stored pod (evicted ones keep their deletionTimestamp until `finish_deletions`)."""
        with self._lock:
            return [copy.deepcopy(p) for _, p in sorted(self._pods.items())]

    def protect(self, namespace: str, name: str, budget: str = "train-pdb") -> None:
        """A PodDisruptionBudget named `budget` allows no disruption of this pod: evictions answer 429."""
        with self._lock:
            self._budgets[(namespace, name)] = budget

    def unprotect(self, namespace: str, name: str) -> None:
        with self._lock:
            self._budgets.pop((namespace, name), None)

    def finish_deletions(self) -> None:
        """The kubelets confirm every graceful deletion: pods with a deletionTimestamp are gone."""
        with self._lock:
            for key in [k for k, p in self._pods.items() if p["metadata"].get("deletionTimestamp")]:
                del self._pods[key]
            self._next_revision()

    def remove_node(self, name: str) -> None:
        """The node is deleted (drained and removed, say): later requests for it are 404."""
        with self._lock:
            before = self._nodes.pop(name)
            gone = copy.deepcopy(before)
            gone["metadata"]["resourceVersion"] = self._next_revision()
            self._record("DELETED", before, gone)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stored Event, in the order created."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._events.values()]

    @property
    def requests(self) -> list[Request]:
        """Every request received, in the order received, injected failures and refusals included."""
        with self._lock:
            return [replace(r, query=dict(r.query), body=copy.deepcopy(r.body)) for r in self._requests]

    # -- scripting the world ---------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_pattern: str,
        status: int,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        message: str = "",
        delay: float = 0.0,
    ) -> None:
        """The next `times` requests matching `method` ("*" for any) and `path_pattern` (re.fullmatch on the
        path) are answered `status` with a Status body and `headers`, after `delay` seconds, unserved: before
        authentication, and without running hooks (the API server never saw them)."""
        self._add_rule(
            self._failures,
            _Failure(method.upper(), re.compile(path_pattern), times, status, dict(headers or {}), message, delay),
        )

    def heal(self) -> None:
        """Drop every failure still scripted: the API server has recovered."""
        with self._lock:
            self._failures.clear()

    def before(
        self, method: str, path_pattern: str, action: Callable[[FakeApiServer], None], *, times: int = 1
    ) -> None:
        """Run `action(self)` just before serving each of the next `times` matching requests."""
        self._add_rule(self._before, _Hook(method.upper(), re.compile(path_pattern), times, action))

    def after(self, method: str, path_pattern: str, action: Callable[[FakeApiServer], None], *, times: int = 1) -> None:
        """Run `action(self)` just after serving each of the next `times` matching requests, before the answer
        leaves: the client cannot send its next request before the action is done."""
        self._add_rule(self._after, _Hook(method.upper(), re.compile(path_pattern), times, action))

    def forbid(self, verb: str, resource: str, *, subresource: str = "") -> None:
        """RBAC denies `verb` on `resource` (and `subresource`): such requests get 403 from now on."""
        if verb not in VERBS:
            raise ValueError(f"verb must be one of {sorted(VERBS)}, not {verb!r}")
        with self._lock:
            self._forbidden.add((verb, resource, subresource))

    def _add_rule(self, rules: list[_R], rule: _R) -> None:
        if rule.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            rules.append(rule)

    def _take(self, rules: list[_R], method: str, path: str, *, every: bool) -> list[_R]:
        """The rules the request matches (the first only, unless `every`), each with one use fewer."""
        taken = []
        with self._lock:
            for rule in list(rules):
                if rule.matches(method, path):
                    taken.append(rule)
                    rule.remaining -= 1
                    if not rule.remaining:
                        rules.remove(rule)
                    if not every:
                        break
        return taken

    # -- serving -----------------------------------------------------------------------------

    def _track(self, connection: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._connections.add(connection)
            return True

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _respond(self, method: str, path: str, query: dict[str, str], headers: Message, raw: bytes) -> _Response:
        """Log the request, then answer it: an injected failure, or hooks around the real handling."""
        try:
            logged_body = json.loads(raw) if raw else None
        except ValueError:
            logged_body = None
        record = Request(method, path, query, headers.get("Content-Type"), logged_body)
        with self._lock:
            self._requests.append(record)
        failures = self._take(self._failures, method, path, every=False)
        if failures:
            failure = failures[0]
            self._stopping.wait(failure.delay)
            response = _Response(failure.status, _injected_status(failure), dict(failure.headers))
            record.status = response.code
            return response
        try:
            for hook in self._take(self._before, method, path, every=True):
                hook.action(self)
            response = self._serve(method, path, query, headers, raw)
            record.status = response.code
            for hook in self._take(self._after, method, path, every=True):
                hook.action(self)
        except Exception as error:  # a bug here or in a test's action: a 500 the test sees, with the traceback
            traceback.print_exc()
            response = _ApiError(500, "InternalError", f"Internal error occurred: {error!r}").response()
            record.status = response.code
        return response

    def _serve(self, method: str, path: str, query: dict[str, str], headers: Message, raw: bytes) -> _Response:
        """Authenticate, route, authorize, handle: the order of kube-apiserver's filter chain."""
        try:
            token = (headers.get("Authorization") or "").removeprefix("Bearer ")
            with self._lock:
                who = (
                    self._identities.get(token) if (headers.get("Authorization") or "").startswith("Bearer ") else None
                )
            if who is None:
                raise _ApiError(401, "Unauthorized", "Unauthorized")
            content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            accept = headers.get("Accept")
            if path == "/api/v1/nodes":
                self._check(method, {"GET"})
                watching = query.get("watch") in ("true", "1")
                self._authorize(who, "watch" if watching else "list", "nodes")
                shape = parts.accepted(accept, listing=True, watching=watching)
                if shape is None:
                    raise _not_acceptable(accept)
                if watching:
                    return self._watch_nodes(query, shape)
                return self._list_nodes(query, shape)
            if match := _NODE_PATH.fullmatch(path):
                name, subresource = match[1], match[2] or ""
                self._check(method, {"GET", "PATCH"})
                verb = {"GET": "get", "PATCH": "patch"}[method]
                self._authorize(who, verb, "nodes", subresource, name=name)
                if method == "GET":
                    return self._get_node(name, parts.accepted(accept, listing=False, watching=False))
                return self._patch_node(name, subresource, content_type, raw, _dry_run(query, "PatchOptions"), who)
            if match := _EVENTS_PATH.fullmatch(path):
                namespace = match[1] or ""
                self._check(method, {"GET", "POST"} if namespace else {"GET"})
                if method == "GET":
                    _refuse_watch(query)
                    self._authorize(who, "list", "events", namespace=namespace)
                    return self._list_events(namespace, query)
                self._authorize(who, "create", "events", namespace=namespace)
                return self._create_event(namespace, content_type, raw, _dry_run(query, "CreateOptions"), who)
            if match := _PODS_PATH.fullmatch(path):
                self._check(method, {"GET"})
                _refuse_watch(query)
                self._authorize(who, "list", "pods", namespace=match[1] or "")
                return self._list_pods(match[1] or "", query)
            if match := _EVICTION_PATH.fullmatch(path):
                self._check(method, {"POST"})
                self._authorize(who, "create", "pods", "eviction", name=match[2], namespace=match[1])
                return self._evict(match[1], match[2], content_type, raw)
            if match := _POD_PATH.fullmatch(path):
                self._check(method, {"DELETE"})
                self._authorize(who, "delete", "pods", name=match[2], namespace=match[1])
                return self._delete_pod(match[1], match[2])
            if match := _EVENT_PATH.fullmatch(path):
                namespace, name = match[1], match[2]
                self._check(method, {"GET"})
                self._authorize(who, "get", "events", name=name, namespace=namespace)
                return self._get_event(namespace, name)
            if match := _LEASES_PATH.fullmatch(path):
                namespace, name = match[1], match[2] or ""
                self._check(method, {"GET", "PUT"} if name else {"POST"})
                verb = {"GET": "get", "PUT": "update", "POST": "create"}[method]
                self._authorize(who, verb, "leases", name=name, namespace=namespace, group="coordination.k8s.io")
                if method == "GET":
                    return self._get_lease(namespace, name)
                return self._write_lease(namespace, name, content_type, raw, create=method == "POST")
            raise _ApiError(404, "NotFound", _MESSAGES[404], details={})
        except _ApiError as error:
            return error.response()

    @staticmethod
    def _check(method: str, allowed: set[str]) -> None:
        if method not in allowed:
            raise _ApiError(405, "MethodNotAllowed", _MESSAGES[405], details={})

    def _authorize(
        self,
        who: Identity,
        verb: str,
        resource: str,
        subresource: str = "",
        *,
        name: str = "",
        namespace: str = "",
        group: str = "",
    ) -> None:
        """RBAC's answer for a denied request: the message names the user, verb, resource and scope."""
        full = f"{resource}/{subresource}" if subresource else resource
        with self._lock:
            denied = (verb, resource, subresource) in self._forbidden or not who.allows(verb, full, namespace)
        if not denied:
            return
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        kind = f"{resource}.{group}" if group else resource
        target = f'{kind} "{name}"' if name else kind
        message = (
            f'{target} is forbidden: User "{who.user}" cannot {verb} resource "{full}" in API group "{group}" {scope}'
        )
        raise _ApiError(403, "Forbidden", message, details=_details(name, resource))

    def _admit(
        self, who: Identity, old: dict[str, Any] | None, new: dict[str, Any], resource: str, subresource: str = ""
    ) -> None:
        """The admission hook, as ValidatingAdmissionPolicies deny: 422 Invalid, "... is forbidden: <message>"."""
        hook = self.admission
        if hook is None:
            return
        denied = hook(who.info(), copy.deepcopy(old), copy.deepcopy(new), resource, subresource)
        if denied:
            name = new.get("metadata", {}).get("name", "")
            message = f'{resource} "{name}" is forbidden: {denied}'
            details = {**_details(name, resource), "causes": [{"message": denied}]}
            raise _ApiError(422, "Invalid", message, details=details)

    # -- nodes ---------------------------------------------------------------------------------

    def _get_node(self, name: str, shape: parts.Shape | None) -> _Response:
        if shape is None:
            raise _not_acceptable("")
        with self._lock:
            if name not in self._nodes:
                raise _not_found("nodes", name)
            node = copy.deepcopy(self._nodes[name])
        if shape.kind == "PartialObjectMetadata":
            return _Response(200, parts.partial(node, shape.version))
        if shape.kind == "Table":
            return _Response(
                200, parts.node_table([node], node["metadata"]["resourceVersion"], "Metadata", parts.now())
            )
        return _Response(200, node)

    def _list_nodes(self, query: dict[str, str], shape: parts.Shape) -> _Response:
        labels = _label_selector(query.get("labelSelector", ""))
        fields = _field_selector(query.get("fieldSelector", ""), _NODE_FIELDS)
        include = query.get("includeObject", "Metadata")
        if include not in ("None", "Metadata", "Object"):
            error = _FieldError(
                "includeObject", "FieldValueNotSupported", include, 'supported values: "None", "Metadata", "Object"'
            )
            raise _invalid("TableOptions.meta.k8s.io", "", [error])
        with self._lock:
            chosen = [
                node for _, node in sorted(self._nodes.items()) if _selected(node, labels, fields, _node_fields(node))
            ]
            revision = str(self._revision)
            if shape.kind == "PartialObjectMetadataList":
                return _Response(200, parts.partial_list(chosen, revision, shape.version))
            if shape.kind == "Table":
                return _Response(200, parts.node_table(chosen, revision, include, parts.now(), shape.version))
            items = [_list_item(node) for node in chosen]
        return _Response(
            200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": revision}, "items": items}
        )

    def _watch_nodes(self, query: dict[str, str], shape: parts.Shape) -> _Response:
        """A watch: ADDED for every selected node first when it starts from no version (or "0"), then every
        change after the version, each as the selection sees it; 410 Expired (as an ERROR event, the way the
        watch cache answers) for a version compacted away."""
        labels = _label_selector(query.get("labelSelector", ""))
        fields = _field_selector(query.get("fieldSelector", ""), _NODE_FIELDS)
        since = query.get("resourceVersion", "")
        if since and not since.isdigit():
            raise _bad_request(f'invalid resource version "{since}"')
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise _bad_request(f'invalid timeoutSeconds "{query["timeoutSeconds"]}"') from None
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        partial = shape.kind == "PartialObjectMetadata"

        def selected(node: dict[str, Any] | None) -> bool:
            return node is not None and _selected(node, labels, fields, _node_fields(node))

        def shown(node: dict[str, Any]) -> dict[str, Any]:
            return parts.partial(node, shape.version) if partial else copy.deepcopy(node)

        def bookmark(revision: int) -> dict[str, Any]:
            kind = "PartialObjectMetadata" if partial else "Node"
            group = f"meta.k8s.io/{shape.version}" if partial else "v1"
            meta = {"resourceVersion": str(revision)}
            return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": group, "metadata": meta}}

        def events() -> Iterator[dict[str, Any]]:
            """Each event is chosen under the lock and sent without it: a slow reader holds up no one."""
            with self._lock:
                expired = since not in ("", "0") and int(since) < self._floor
                start = self._revision if since in ("", "0") else int(since)
                initial = (
                    [shown(n) for _, n in sorted(self._nodes.items()) if selected(n)] if since in ("", "0") else []
                )
                current = self._revision
            if expired:
                yield _expired(int(since), current)
                return
            for node in initial:
                yield {"type": "ADDED", "object": node}
            deadline = parts.now().timestamp() + timeout
            sent = start  # the newest version the client has been told of
            while not self._stopping.is_set():
                mark = None
                with self._lock:
                    if start < self._floor:
                        expired, current = True, self._revision
                    found = [entry for entry in self._history if entry[0] > start]
                    if not found and not expired:
                        left = deadline - parts.now().timestamp()
                        if left <= 0:
                            return
                        if not self._changed.wait(min(left, self.bookmark_s) if bookmarks else left):
                            # Quiet for a while: a bookmark, if the version moved on (changes outside the
                            # selection, other objects) and no change of a node is left to send.
                            quiet = not any(entry[0] > start for entry in self._history)
                            if bookmarks and quiet and self._revision > sent and start >= self._floor:
                                start = mark = self._revision
                if expired:
                    yield _expired(start, current)
                    return
                if mark is not None:
                    sent = mark
                    yield bookmark(mark)
                for revision, kind, before, after in found:
                    start = revision
                    was, now = selected(before), selected(after)
                    if was or now:
                        sent = revision
                    if kind == "DELETED" and was:
                        yield {"type": "DELETED", "object": shown(after or before or {})}
                    elif was and now:
                        yield {"type": "MODIFIED", "object": shown(after or {})}
                    elif now:
                        yield {"type": "ADDED", "object": shown(after or {})}
                    elif was:  # it left the selection: the watch cache says DELETED
                        yield {"type": "DELETED", "object": shown(after or {})}

        return _Stream(200, events())

    def _record(self, kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """A change of a node, for the watches (the caller holds the lock)."""
        revision = int((after or before or {})["metadata"]["resourceVersion"])
        if len(self._history) == self._history.maxlen:
            self._floor = max(self._floor, self._history[0][0])  # that change is forgotten now
        self._history.append((revision, kind, before, after))
        self._changed.notify_all()

    def _patch_node(
        self, name: str, subresource: str, content_type: str, raw: bytes, dry_run: bool, who: Identity
    ) -> _Response:
        if content_type != STRATEGIC_MERGE_PATCH:  # the only patch the harness sends (harness/kube/api.py)
            raise _unsupported_media_type([STRATEGIC_MERGE_PATCH])
        patch = _parse_json(raw)

        def apply(current: dict[str, Any]) -> Any:
            return _strategic_patch_document(current, patch)

        return self._update_node(name, subresource, apply, dry_run, who)

    def _update_node(
        self, name: str, subresource: str, compute: Callable[[dict[str, Any]], Any], dry_run: bool, who: Identity
    ) -> _Response:
        """The registry's update path of a PATCH: precondition, strategy, validation, validating
        admission (on a write that changes nothing and on a dry run too), store."""
        with self._lock:
            stored = self._nodes.get(name)
            if stored is None:
                raise _not_found("nodes", name)
            updated = compute(copy.deepcopy(stored))
            if not isinstance(updated, dict) or any(not isinstance(updated.get(p, {}), dict) for p in _PARTS):
                raise _bad_request(
                    "the object does not decode as a Node: it, its metadata, spec and status are objects"
                )
            metadata = updated.setdefault("metadata", {})
            if metadata.get("name") != name:
                raise _bad_request(
                    f"the name of the object ({metadata.get('name') or ''}) does not match the name on the URL ({name})"
                )
            old = stored["metadata"]
            if metadata.get("resourceVersion") not in (None, "", old["resourceVersion"]):
                raise _ApiError(
                    409, "Conflict", _CONFLICT.format(resource="nodes", name=name), details=_details(name, "nodes")
                )
            errors = []
            if metadata.get("uid") not in (None, "", old["uid"]):
                errors.append(_FieldError("metadata.uid", "FieldValueInvalid", metadata["uid"], "field is immutable"))
            # rest.BeforeUpdate and the node strategies: what a write cannot change
            updated["kind"], updated["apiVersion"] = "Node", "v1"
            metadata.pop("namespace", None)
            metadata.update(
                uid=old["uid"], creationTimestamp=old["creationTimestamp"], resourceVersion=old["resourceVersion"]
            )
            kept = "spec" if subresource == "status" else "status"
            updated[kept] = copy.deepcopy(stored.get(kept, {}))
            updated = _normalized_node(updated)
            errors += _node_errors(updated)
            if errors:
                raise _invalid("Node", name, errors)
            self._admit(who, stored, updated, "nodes", subresource)
            if _canonical(updated) == _canonical(stored) or dry_run:
                return _Response(200, updated)  # no write: the resourceVersion stays
            updated["metadata"]["resourceVersion"] = self._next_revision()
            self._nodes[name] = updated
            self._record("MODIFIED", stored, updated)
            return _Response(200, copy.deepcopy(updated))

    # -- events ----------------------------------------------------------------------------------

    def _get_event(self, namespace: str, name: str) -> _Response:
        with self._lock:
            event = self._events.get((namespace, name))
            if event is None:
                raise _not_found("events", name)
            return _Response(200, copy.deepcopy(event))

    def _list_events(self, namespace: str, query: dict[str, str]) -> _Response:
        labels = _label_selector(query.get("labelSelector", ""))
        fields = _field_selector(query.get("fieldSelector", ""), _EVENT_FIELDS)
        with self._lock:
            items = [
                _list_item(event)
                for (ns, _), event in sorted(self._events.items())
                if (not namespace or ns == namespace) and _selected(event, labels, fields, _event_fields(event))
            ]
            revision = str(self._revision)
        return _Response(
            200, {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": revision}, "items": items}
        )

    def _create_event(self, namespace: str, content_type: str, raw: bytes, dry_run: bool, who: Identity) -> _Response:
        _require_json(content_type)
        event = _parse_json(raw)
        if not isinstance(event, dict) or not isinstance(event.get("metadata", {}), dict):
            raise _bad_request(f"json: cannot unmarshal {_go_type(event)} into Go value of type v1.Event")
        _check_type(event, "Event")
        metadata = event.setdefault("metadata", {})
        if metadata.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self._lock:
            name = metadata.get("name") or ""
            if not name and metadata.get("generateName"):
                name = self._generated_name(namespace, metadata["generateName"])
            errors = _event_errors(event, name, namespace)
            if errors:
                raise _invalid("Event", name, errors)
            if namespace not in self._namespaces:
                raise _not_found("namespaces", namespace)
            self._admit(who, None, {**event, "metadata": {**metadata, "name": name, "namespace": namespace}}, "events")
            if (namespace, name) in self._events:
                raise _ApiError(
                    409, "AlreadyExists", f'events "{name}" already exists', details=_details(name, "events")
                )
            event["kind"], event["apiVersion"] = "Event", "v1"
            metadata.update(name=name, namespace=namespace, uid=self._uid(), creationTimestamp=_now())
            if dry_run:  # the dry-run storage never writes, so no resourceVersion is assigned
                return _Response(201, _pruned(event))
            metadata["resourceVersion"] = self._next_revision()
            self._events[(namespace, name)] = event = _pruned(event)
            return _Response(201, copy.deepcopy(event))

    def _generated_name(self, namespace: str, base: str) -> str:
        """names.SimpleNameGenerator: the prefix, at most 58 characters, then 5 random ones."""
        while True:
            name = base[:58] + "".join(self._random.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
            if (namespace, name) not in self._events:
                return name

    # -- pods ------------------------------------------------------------------------------------

    def _list_pods(self, namespace: str, query: dict[str, str]) -> _Response:
        labels = _label_selector(query.get("labelSelector", ""))
        fields = _field_selector(query.get("fieldSelector", ""), _POD_FIELDS)
        with self._lock:
            items = [
                _list_item(pod)
                for (ns, _), pod in sorted(self._pods.items())
                if (not namespace or ns == namespace) and _selected(pod, labels, fields, _pod_fields(pod))
            ]
            revision = str(self._revision)
        return _Response(
            200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": revision}, "items": items}
        )

    def _evict(self, namespace: str, name: str, content_type: str, raw: bytes) -> _Response:
        """The eviction subresource: a disruption budget that allows none answers 429 with a DisruptionBudget
        cause; otherwise the pod is deleted gracefully (a deletionTimestamp, its grace period) and 201 says so."""
        _require_json(content_type)
        body = _parse_json(raw)
        if not isinstance(body, dict) or body.get("kind") not in (None, "", "Eviction"):
            raise _bad_request("the body of an eviction must be a policy/v1 Eviction")
        if body.get("apiVersion") not in (None, "", "policy/v1", "policy/v1beta1"):
            raise _bad_request(f"the body is {body.get('apiVersion')}, not policy/v1, Kind=Eviction")
        if (body.get("metadata") or {}).get("name") != name:
            raise _bad_request(f"name in URL does not match name in Eviction object: {name}")
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise _not_found("pods", name)
            budget = self._budgets.get((namespace, name))
            terminal = pod["status"].get("phase") in ("Succeeded", "Failed")
            if budget and not terminal and not pod["metadata"].get("deletionTimestamp"):
                cause = {
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {budget} needs 1 healthy pods and has 1 currently",
                }
                raise _ApiError(429, "TooManyRequests", _PDB_MESSAGE, details={"causes": [cause]})
            if not pod["metadata"].get("deletionTimestamp"):
                pod["metadata"]["deletionTimestamp"] = _now()
                pod["metadata"]["deletionGracePeriodSeconds"] = pod["spec"].get("terminationGracePeriodSeconds", 30)
                pod["metadata"]["resourceVersion"] = self._next_revision()
        return _Response(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})

    def _delete_pod(self, namespace: str, name: str) -> _Response:
        """A graceful delete: the pod gets its deletionTimestamp (the kubelet finishes it, `finish_deletions`)."""
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise _not_found("pods", name)
            if not pod["metadata"].get("deletionTimestamp"):
                pod["metadata"]["deletionTimestamp"] = _now()
                pod["metadata"]["deletionGracePeriodSeconds"] = pod["spec"].get("terminationGracePeriodSeconds", 30)
                pod["metadata"]["resourceVersion"] = self._next_revision()
            return _Response(200, copy.deepcopy(pod))

    # -- leases ----------------------------------------------------------------------------------

    def _get_lease(self, namespace: str, name: str) -> _Response:
        with self._lock:
            lease = self._leases.get((namespace, name))
            if lease is None:
                raise _not_found(LEASES, name)
            return _Response(200, copy.deepcopy(lease))

    def _write_lease(self, namespace: str, name: str, content_type: str, raw: bytes, *, create: bool) -> _Response:
        """Create (POST) or update (PUT) a Lease. An update must carry the resourceVersion it replaces (Leases
        allow no unconditional update); a MicroTime without its six fractional digits does not decode."""
        _require_json(content_type)
        body = _parse_json(raw)
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise _bad_request(f"json: cannot unmarshal {_go_type(body)} into Go value of type v1.Lease")
        if body.get("kind") not in (None, "", "Lease") or body.get("apiVersion") not in (
            None,
            "",
            "coordination.k8s.io/v1",
        ):
            raise _bad_request(f"the body is {body.get('apiVersion')}, Kind={body.get('kind')}, not a v1 Lease")
        if problem := parts.micro_time_error(body):
            raise _bad_request(problem)
        metadata = body.setdefault("metadata", {})
        if metadata.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the namespace sent on the request")
        name = name or str(metadata.get("name") or "")
        if metadata.get("name") not in (None, "", name):
            raise _bad_request(
                f"the name of the object ({metadata.get('name')}) does not match the name on the URL ({name})"
            )
        errors = [_FieldError(path, reason, value, detail) for path, reason, value, detail in parts.lease_errors(body)]
        if not name:
            errors.insert(
                0, _FieldError("metadata.name", "FieldValueRequired", detail="name or generateName is required")
            )
        with self._lock:
            if namespace not in self._namespaces:
                raise _not_found("namespaces", namespace)
            stored = self._leases.get((namespace, name))
            if create and stored is not None:
                raise _ApiError(
                    409, "AlreadyExists", f'{LEASES} "{name}" already exists', details=_details(name, "leases")
                )
            if not create:
                if stored is None:
                    raise _not_found(LEASES, name)
                version = str(metadata.get("resourceVersion") or "")
                if not version:
                    errors.append(
                        _FieldError(
                            "metadata.resourceVersion", "FieldValueInvalid", "0x0", "must be specified for an update"
                        )
                    )
                elif version != stored["metadata"]["resourceVersion"]:
                    conflict = _CONFLICT.format(resource=LEASES, name=name)
                    raise _ApiError(409, "Conflict", conflict, details=_details(name, "leases"))
            if errors:
                raise _invalid("Lease", name, errors)
            lease = {
                "kind": "Lease",
                "apiVersion": "coordination.k8s.io/v1",
                "metadata": {
                    **metadata,
                    "name": name,
                    "namespace": namespace,
                    "uid": stored["metadata"]["uid"] if stored else self._uid(),
                    "creationTimestamp": stored["metadata"]["creationTimestamp"] if stored else _now(),
                    "resourceVersion": self._next_revision(),
                },
                "spec": copy.deepcopy(body.get("spec") or {}),
            }
            self._leases[(namespace, name)] = lease = _pruned(lease)
            return _Response(201 if create else 200, copy.deepcopy(lease))

    # -- helpers that need the state ---------------------------------------------------------------

    def _next_revision(self) -> str:
        """One counter for every write, as etcd's revision is one for the whole store."""
        with self._lock:
            self._revision += 1
            return str(self._revision)

    def _uid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._random.getrandbits(128), version=4))


class _HttpServer(ThreadingHTTPServer):
    """A thread per connection; server_close() joins them all. socketserver joins only non-daemon ones, and
    daemon threads are needed so that a server a test forgets to stop cannot hold the interpreter open."""

    def __init__(self, address: tuple[str, int], fake: FakeApiServer) -> None:
        self.fake = fake
        self.handlers: list[threading.Thread] = []
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        self.handlers = [t for t in self.handlers if t.is_alive()] + [thread]
        thread.start()

    def server_close(self) -> None:
        super().server_close()
        for thread in self.handlers:
            thread.join()


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as urllib3 pools connections; every answer is JSON."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall per request
    server: _HttpServer

    def handle(self) -> None:
        if not self.server.fake._track(self.connection):
            return
        try:
            super().handle()
        except OSError:
            pass  # the client hung up (it timed out waiting for a delayed answer): there is no one to answer
        finally:
            self.server.fake._untrack(self.connection)

    def _answer(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        response = self.server.fake._respond(self.command, unquote(url.path), query, self.headers, raw)
        if isinstance(response, _Stream):
            self._stream(response)
            return
        payload = json.dumps(response.body).encode()
        self.send_response(response.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, response: _Stream) -> None:
        """A watch's answer: chunked, one event a line, flushed as it comes; the connection closes after it."""
        self.send_response(response.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in response.body:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass  # the client went away (it stopped watching)
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is `FakeApiServer.requests`."""


# -- Status objects -------------------------------------------------------------------------------------


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _injected_status(failure: _Failure) -> dict[str, Any]:
    retry_after = {k.lower(): v for k, v in failure.headers.items()}.get("retry-after", "")
    details = {"retryAfterSeconds": int(retry_after)} if retry_after.isdigit() else None
    message = failure.message or _MESSAGES.get(
        failure.status,
        f"the server responded with the status code {failure.status} but did not return more information",
    )
    return _status(failure.status, _REASONS.get(failure.status, ""), message, details)


def _expired(start: int, current: int) -> dict[str, Any]:
    status = _status(410, "Expired", f"too old resource version: {start} ({current})", None)
    return {"type": "ERROR", "object": status}


def _not_acceptable(accept: str | None) -> _ApiError:
    return _ApiError(
        406, "NotAcceptable", f"only the following media types are accepted: application/json, given {accept}"
    )


def _details(name: str, kind: str) -> dict[str, Any]:
    return {"name": name, "kind": kind} if name else {"kind": kind}


def _not_found(resource: str, name: str) -> _ApiError:
    return _ApiError(404, "NotFound", f'{resource} "{name}" not found', details=_details(name, resource))


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, "BadRequest", message)


def _unsupported_media_type(accepted: Iterable[str]) -> _ApiError:
    listed = ", ".join(accepted)
    return _ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {listed}",
    )


def _invalid(kind: str, name: str, errors: list[_FieldError]) -> _ApiError:
    rendered = [f"{e.path}: {e.body()}" for e in errors]
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    details = {**_details(name, kind), "causes": [e.cause() for e in errors]}
    return _ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details=details)


# -- request parsing -------------------------------------------------------------------------------------


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as error:
        raise _bad_request(f"error decoding the request body as JSON: {error}") from None


def _require_json(content_type: str) -> None:
    """Bodies of create and update: JSON, which is also what no Content-Type means (the client sends none)."""
    if content_type not in ("", "application/json"):
        raise _unsupported_media_type(["application/json"])


def _check_type(body: dict[str, Any], kind: str) -> None:
    """A body of another kind or version does not decode into this resource."""
    if body.get("kind") not in (None, "", kind) or body.get("apiVersion") not in (None, "", "v1"):
        raise _bad_request(f"the body is {body.get('apiVersion')}, Kind={body.get('kind')}, not v1, Kind={kind}")


def _dry_run(query: Mapping[str, str], options: str) -> bool:
    """dryRun=All: everything but the write; anything else is refused as the options' validation does."""
    value = query.get("dryRun", "")
    if value not in ("", "All"):
        error = _FieldError("dryRun", "FieldValueNotSupported", [value], 'supported values: "All"')
        raise _invalid(f"{options}.meta.k8s.io", "", [error])
    return value == "All"


def _refuse_watch(query: Mapping[str, str]) -> None:
    """The fake serves no watch streams: a loud 400 rather than a list where a stream was expected."""
    if query.get("watch") in ("true", "1"):
        raise _bad_request("the fake API server does not serve watches")


def _go_type(value: Any) -> str:
    """The JSON type as Go's encoding/json names it in an unmarshal error."""
    if isinstance(value, bool):
        return "bool"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), "number")


# -- objects ------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pruned(value: Any) -> Any:
    """What Go's JSON encoding of the typed object leaves: omitempty drops null, false, "", [] and {} fields
    (string maps keep their entries)."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            item = item if key in _STRING_MAPS and isinstance(item, dict) else _pruned(item)
            if item is None or item is False or item == "" or item == [] or item == {}:
                continue
            kept[key] = item
        return kept
    if isinstance(value, list):
        return [_pruned(item) for item in value]
    return value


def _normalized_node(node: dict[str, Any]) -> dict[str, Any]:
    """The node as the server stores and answers it: pruned, with metadata, spec and status always present
    (they are structs in Go, never omitted)."""
    pruned: dict[str, Any] = _pruned(node)
    for part in _PARTS:
        pruned.setdefault(part, {})
    return pruned


def _list_item(obj: dict[str, Any]) -> dict[str, Any]:
    """Items of a list answer carry no kind or apiVersion: the list's own say what they are."""
    item = copy.deepcopy(obj)
    item.pop("kind", None)
    item.pop("apiVersion", None)
    return item


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def _node_fields(node: dict[str, Any]) -> dict[str, str]:
    return {
        "metadata.name": node["metadata"]["name"],
        "spec.unschedulable": "true" if node["spec"].get("unschedulable") else "false",
    }


def _pod_fields(pod: dict[str, Any]) -> dict[str, str]:
    return {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "spec.nodeName": str(pod["spec"].get("nodeName") or ""),
        "status.phase": str(pod.get("status", {}).get("phase") or ""),
    }


def _event_fields(event: dict[str, Any]) -> dict[str, str]:
    involved = event.get("involvedObject") or {}
    fields = {f"involvedObject.{k}": str(involved.get(k) or "") for k in _INVOLVED_FIELDS}
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
    return fields | {
        "metadata.name": event["metadata"]["name"],
        "metadata.namespace": event["metadata"]["namespace"],
        "reason": str(event.get("reason") or ""),
        "reportingComponent": str(event.get("reportingComponent") or ""),
        "source": str(source),
        "type": str(event.get("type") or ""),
    }


# -- validation -----------------------------------------------------------------------------------------------


def _regex_error(message: str, pattern: re.Pattern[str], *examples: str) -> str:
    """validation.RegexError, down to its spacing."""
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{pattern.pattern}')"


_QUALIFIED_NAME_ERROR = _regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
    _QUALIFIED_NAME,
    "MyName",
    "my.name",
    "123-abc",
)


def _qualified_name_errors(value: str) -> list[str]:
    """validation.IsQualifiedName: an optional DNS subdomain prefix and '/', then a name of at most 63."""
    parts = value.split("/")
    if len(parts) > 2:
        return [
            f"a qualified name {_QUALIFIED_NAME_ERROR} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')"
        ]
    errors = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        elif len(prefix) > 253:
            errors.append("prefix part must be no more than 253 characters")
        if prefix and not _DNS_SUBDOMAIN.fullmatch(prefix):
            errors.append(
                "prefix part "
                + _regex_error(
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                    "and must start and end with an alphanumeric character",
                    _DNS_SUBDOMAIN,
                    "example.com",
                )
            )
    name = parts[-1]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        errors.append(f"name part {_QUALIFIED_NAME_ERROR}")
    return errors


def _label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character",
                _LABEL_VALUE,
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errors


def _string_map_errors(value: Any, path: str, *, labels: bool) -> list[_FieldError]:
    if not isinstance(value, dict):
        return [_FieldError(path, "FieldValueInvalid", value, "must be an object of strings")]
    errors = []
    for key, item in value.items():
        if not isinstance(item, str):
            errors.append(_FieldError(path, "FieldValueInvalid", item, "must be a string"))
            continue
        errors += [
            _FieldError(path, "FieldValueInvalid", key, m)
            for m in _qualified_name_errors(key if labels else key.lower())
        ]
        if labels:
            errors += [_FieldError(path, "FieldValueInvalid", item, m) for m in _label_value_errors(item)]
    if not labels and sum(len(k) + len(v) for k, v in value.items() if isinstance(v, str)) > 256 * 1024:
        errors.append(_FieldError(path, "FieldValueTooLong", detail="must have at most 262144 bytes"))
    return errors


def _node_errors(node: dict[str, Any]) -> list[_FieldError]:
    """ValidateNode and ValidateNodeUpdate, for what the harness writes: labels, annotations, taints."""
    metadata = node["metadata"]
    errors = _string_map_errors(metadata.get("labels", {}), "metadata.labels", labels=True)
    errors += _string_map_errors(metadata.get("annotations", {}), "metadata.annotations", labels=False)
    taints = node["spec"].get("taints", [])
    if not isinstance(taints, list):
        return errors + [_FieldError("spec.taints", "FieldValueInvalid", taints, "must be a list of taints")]
    seen = set()
    for i, taint in enumerate(taints):
        path = f"spec.taints[{i}]"
        if not isinstance(taint, dict) or not all(
            isinstance(taint.get(k, ""), str) for k in ("key", "value", "effect")
        ):
            errors.append(
                _FieldError(path, "FieldValueInvalid", taint, "must be a taint: key, value and effect strings")
            )
            continue
        key, value, effect = taint.get("key", ""), taint.get("value", ""), taint.get("effect", "")
        errors += [_FieldError(f"{path}.key", "FieldValueInvalid", key, m) for m in _qualified_name_errors(key)]
        if messages := _label_value_errors(value):
            errors.append(_FieldError(f"{path}.value", "FieldValueInvalid", value, "; ".join(messages)))
        if not effect:
            errors.append(_FieldError(f"{path}.effect", "FieldValueRequired"))
        elif effect not in _TAINT_EFFECTS:
            supported = ", ".join(f'"{e}"' for e in _TAINT_EFFECTS)
            errors.append(
                _FieldError(f"{path}.effect", "FieldValueNotSupported", effect, f"supported values: {supported}")
            )
        if (key, effect) in seen:
            errors.append(
                _FieldError(path, "FieldValueDuplicate", taint, "taints must be unique by key and effect pair")
            )
        seen.add((key, effect))
    return errors


def _event_errors(event: dict[str, Any], name: str, namespace: str) -> list[_FieldError]:
    """rest.BeforeCreate's name checks, then the core/v1 Event's legacy validation."""
    if not name:
        return [_FieldError("metadata.name", "FieldValueRequired", detail="name or generateName is required")]
    errors = [
        _FieldError("metadata.name", "FieldValueInvalid", name, f"may not contain '{c}'") for c in "/%" if c in name
    ]
    if name in (".", ".."):
        errors.append(_FieldError("metadata.name", "FieldValueInvalid", name, f"may not be '{name}'"))
    involved = event.get("involvedObject")
    involved = involved if isinstance(involved, dict) else {}
    involved_namespace = involved.get("namespace") or ""
    if event.get("eventTime"):  # a new-style event
        allowed = (involved_namespace,) if involved_namespace else ("default", "kube-system")
    else:  # an old-style one: a cluster-scoped object's events go to "default"
        allowed = (involved_namespace,) if involved_namespace else ("", "default")
    if namespace not in allowed:
        errors.append(
            _FieldError(
                "involvedObject.namespace", "FieldValueInvalid", involved_namespace, "does not match event.namespace"
            )
        )
    if not event.get("eventTime"):
        return errors
    controller = str(event.get("reportingComponent") or "")
    if not controller:
        errors.append(_FieldError("reportingController", "FieldValueRequired"))
    else:
        errors += [
            _FieldError("reportingController", "FieldValueInvalid", controller, m)
            for m in _qualified_name_errors(controller)
        ]
    for key, path, limit in (
        ("reportingInstance", "reportingInstance", 128),
        ("action", "action", 128),
        ("reason", "reason", 128),
    ):
        text = str(event.get(key) or "")
        if not text:
            errors.append(_FieldError(path, "FieldValueRequired"))
        elif len(text) > limit:
            errors.append(_FieldError(path, "FieldValueInvalid", "", f"can have at most {limit} characters"))
    if len(str(event.get("message") or "")) > 1024:
        errors.append(_FieldError("message", "FieldValueInvalid", "", "can have at most 1024 characters"))
    return errors


# -- label and field selectors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """labels.Requirement.Matches: absent keys satisfy != and notin, never > or <."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("in", "=", "=="):
            return present and value in self.values
        if self.operator in ("notin", "!="):
            return not present or value not in self.values
        if not present or not re.fullmatch(r"[+-]?[0-9]+", value):
            return False
        number, bound = int(value), int(self.values[0])
        return number > bound if self.operator == ">" else number < bound


_LEXEME = re.compile(r"[ \t\r\n]*(?:(!=|==|[=!(),<>])|([^ \t\r\n=!(),<>]+))")


class _SelectorParser:
    """labels.Parse: the lexer and recursive-descent parser of k8s.io/apimachinery, with its error messages."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while match := _LEXEME.match(text, position):
            symbol, word = match.groups()
            position = match.end()
            if symbol:
                self.tokens.append((symbol, symbol))
            else:
                self.tokens.append((word if word in ("in", "notin") else "id", word))
        self.tokens.append(("end", ""))
        self.position = 0

    def _peek(self, *, values: bool = True) -> tuple[str, str]:
        """The next token; in a values context the keywords in and notin are plain identifiers."""
        kind, literal = self.tokens[self.position]
        return ("id" if values and kind in ("in", "notin") else kind), literal

    def _take(self, *, values: bool = True) -> tuple[str, str]:
        token = self._peek(values=values)
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def parse(self) -> list[_Requirement]:
        requirements: list[_Requirement] = []
        while True:
            kind, literal = self._peek()
            if kind == "end":
                return requirements
            if kind not in ("id", "!"):
                raise _SelectorError(f"found '{literal}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self._requirement())
            except _SelectorError as error:
                raise _SelectorError(f"unable to parse requirement: {error}") from None
            kind, literal = self._take()
            if kind == "end":
                return requirements
            if kind != ",":
                raise _SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            kind, literal = self._peek()
            if kind not in ("id", "!"):
                raise _SelectorError(f"found '{literal}', expected: identifier after ','")

    def _requirement(self) -> _Requirement:
        kind, key = self._take()
        negated = kind == "!"
        if negated:
            kind, key = self._take()
        if kind != "id":
            raise _SelectorError(f"found '{key}', expected: identifier")
        if messages := _qualified_name_errors(key):
            raise _SelectorError(f'key: Invalid value: "{key}": {"; ".join(messages)}')
        kind, literal = self._peek()
        if kind in ("end", ","):
            return _Requirement(key, "!" if negated else "exists", ())
        if negated:
            raise _SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
        operator, literal = self._take(values=False)
        if operator in ("in", "notin"):
            values = self._set_values()
        elif operator in ("=", "==", "!=", ">", "<"):
            values = self._exact_value()
        else:
            raise _SelectorError(f"found '{literal}', expected: in, notin, =, ==, !=, gt, lt")
        for i, value in enumerate(values):
            if operator in (">", "<") and not re.fullmatch(r"[+-]?[0-9]+", value):
                raise _SelectorError(
                    f"values[{i}]: Invalid value: \"{value}\": for 'Gt', 'Lt' operators, the value must be an integer"
                )
            if messages := _label_value_errors(value):
                raise _SelectorError(f'values[{i}]: Invalid value: "{value}": {"; ".join(messages)}')
        return _Requirement(key, operator, values)

    def _exact_value(self) -> tuple[str, ...]:
        kind, literal = self._peek()
        if kind in ("end", ","):
            return ("",)
        kind, literal = self._take()
        if kind != "id":
            raise _SelectorError(f"found '{literal}', expected: identifier")
        return (literal,)

    def _set_values(self) -> tuple[str, ...]:
        kind, literal = self._take()
        if kind != "(":
            raise _SelectorError(f"found '{literal}' expected: '('")
        kind, literal = self._peek()
        if kind == ")":
            self._take()
            return ("",)
        if kind not in ("id", ","):
            raise _SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values: list[str] = []
        while True:  # parseIdentifiersList, where "(a,)" and "(,a)" hold the empty value
            kind, literal = self._take()
            if kind == "id":
                values.append(literal)
                following, seen = self._peek()
                if following == ")":
                    break
                if following != ",":
                    raise _SelectorError(f"found '{seen}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.append("")
                following, _ = self._peek()
                if following == ")":
                    values.append("")
                    break
                if following == ",":
                    self._take()
                    values.append("")
            else:
                raise _SelectorError(f"found '{literal}', expected: ',', or identifier")
        self._take()
        return tuple(sorted(set(values)))


def _label_selector(text: str) -> list[_Requirement]:
    try:
        return _SelectorParser(text).parse()
    except _SelectorError as error:
        raise _bad_request(str(error)) from None


def _field_selector(text: str, supported: frozenset[str]) -> list[tuple[str, bool, str]]:
    """fields.ParseSelector, then the resource's field label check: (field, equal, value) terms."""
    terms: list[str] = []
    start, escaped = 0, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    requirements: list[tuple[str, bool, str]] = []
    for term in filter(None, terms):
        split = next(
            ((i, op) for i in range(len(term)) for op in ("!=", "==", "=") if term.startswith(op, i)),
            None,
        )
        if split is None:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        i, op = split
        label, value = term[:i], _unescaped(term[i + len(op) :])
        if label not in supported:
            raise _bad_request(f"field label not supported: {label}")
        requirements.append((label, op != "!=", value))
    return requirements


def _unescaped(value: str) -> str:
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            if following not in ("\\", ",", "="):
                raise _bad_request(f"invalid field selector: invalid escape sequence: \\{following}")
            out.append(following)
        elif char in ",=":
            raise _bad_request(f"invalid field selector: unescaped literal {char!r}")
        else:
            out.append(char)
    return "".join(out)


def _selected(
    obj: dict[str, Any], labels: list[_Requirement], fields: list[tuple[str, bool, str]], values: dict[str, str]
) -> bool:
    present = obj["metadata"].get("labels") or {}
    return all(r.matches(present) for r in labels) and all((values[f] == v) == equal for f, equal, v in fields)


# -- patches ---------------------------------------------------------------------------------------------------------


_DELETED = object()


def _strategic_patch_document(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise _bad_request(f"json: cannot unmarshal {_go_type(patch)} into Go value of type map[string]interface {{}}")
    merged = _strategic_merge(target, patch, ())
    return {} if merged is _DELETED else merged


def _strategic_merge(original: Any, patch: dict[str, Any], path: tuple[str, ...]) -> Any:
    """A strategic merge patch of one map: like RFC 7386, but lists follow the field's patch strategy, and the
    $patch and $deleteFromPrimitiveList directives apply. Returns _DELETED for {"$patch": "delete"}."""
    directive = patch.get("$patch", "merge")
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        return _strategic_merge({}, {k: v for k, v in patch.items() if k != "$patch"}, path)
    if directive != "merge":  # strategicpatch's error, passed through unconverted: a 500 with no reason
        raise _ApiError(500, "", f"unknown patch type: {directive} in map: {patch}")
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            listed = key.partition("/")[2]
            if not isinstance(value, list):
                raise _bad_request("invalid patch format for primitive list deletion")
            result[listed] = [v for v in result.get(listed) or [] if v not in value]
        elif key.startswith("$") and key != "$patch":
            raise _bad_request(f"the fake API server does not model the strategic merge directive {key}")
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        child = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _strategic_merge(result.get(key), value, child)
            if merged is _DELETED:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _strategic_list(result.get(key), value, child)
        else:
            result[key] = value
    return result


def _strategic_list(original: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    current = original if isinstance(original, list) else []
    merge_key = _MERGE_KEYS.get(path)
    if merge_key is None:
        if path in _MERGED_SCALAR_LISTS:
            return current + [v for i, v in enumerate(patch) if v not in current and v not in patch[:i]]
        return patch  # atomic: replaced whole
    element_path = (*path, "[]")
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        kept = [e for e in patch if not (isinstance(e, dict) and e.get("$patch") == "replace")]
        return [_strategic_merge({}, e, element_path) for e in kept]
    result = list(current)
    for element in patch:
        if not isinstance(element, dict) or merge_key not in element:
            # the apiserver passes this strategicpatch error through unconverted: a 500 with no reason
            raise _ApiError(500, "", f"map: {element} does not contain declared merge key: {merge_key}")
        same = [i for i, e in enumerate(result) if isinstance(e, dict) and e.get(merge_key) == element[merge_key]]
        if element.get("$patch") == "delete":
            result = [e for i, e in enumerate(result) if i not in same]
        elif same:
            result[same[0]] = _strategic_merge(result[same[0]], element, element_path)
        else:
            result.append(_strategic_merge({}, element, element_path))
    return result
