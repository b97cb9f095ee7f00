"""The Kubernetes API, through the official client. The only module that imports `kubernetes`.

It offers the few calls gpu-burnin makes, on plain JSON dicts: for the node agents, read and
patch their own node, patch its status, create Events; for the remediator, metadata-only
lists and watches of the GPU nodes, their Ready and cordon columns as a server-side Table,
its Lease, the pods of one node, evictions. One discipline for every call: 429 waits as long
as Retry-After says; 5xx answers, timeouts and refused connections are retried with
exponential backoff and jitter, bounded in total time; 409 raises `Conflict` for the caller
to re-read and retry; 422 (the API server's validation or an admission policy refused the
write) raises `Invalid` at once, as do 401, 403 and 404, with what was missing. Every error
the client raises becomes a `KubeError` here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import urllib3

from harness import files
from harness.errors import ConfigError
from harness.kube import stream

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
STRATEGIC = "application/strategic-merge-patch+json"
TOOL_NAMESPACE = "gpu-burnin"
"""Where the tool's Events (about Nodes) and the remediator's Lease live, unless the pod's own namespace
(POD_NAMESPACE, from the downward API) says otherwise."""
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1, application/json"
"""What client-go's metadata client and kubectl ask for; plain JSON last, as they do, for a server without."""
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class KubeError(Exception):
    """An API call that did not succeed, in one line: what was asked, and why it failed."""

    def __init__(self, what: str, problem: str, *, status: int | None = None):
        self.what = what
        self.problem = problem
        self.status = status
        super().__init__(f"{what}: {problem}")


class Conflict(KubeError):
    """The object changed between our read and our write, or already exists (409)."""


class Invalid(KubeError):
    """The API server refused the write as invalid (422): its validation, or an admission policy. Trying
    again cannot help: it is said as it is."""


class Blocked(KubeError):
    """An eviction refused for now (429): a PodDisruptionBudget allows no disruption at the moment, or
    the API server is shedding load. Not an error: the caller tries again later, not in a loop here."""


class Expired(KubeError):
    """A watch asked to start from a resourceVersion the API server no longer keeps (410): list again."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Patience:
    """How long to keep trying one call."""

    total_s: float = 60.0
    """Give up on a call after this long, retries and waits included."""
    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    request_timeout_s: float = 10.0
    """Per request: a server that accepts the connection and then says nothing is a timeout."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """A node's Ready and cordon state, from the Status column of the server's Table."""

    ready: bool
    unschedulable: bool


class Watch:
    """An open watch: its events as they come, until the server ends it or `stop` is called."""

    def __init__(self, what: str, response: Any):
        self.what = what
        self._response = response

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event: ADDED, MODIFIED, DELETED, BOOKMARK. Raises Expired for a
        resourceVersion too old (an ERROR event with a 410 Status), KubeError for any other error."""
        try:
            for event in stream.lines(self._response.stream(1 << 16, decode_content=True)):
                kind, obj = str(event.get("type", "")), event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    problem = f"HTTP {code}: {obj.get('message') or obj.get('reason') or 'watch error'}"
                    raise (Expired if code == 410 else KubeError)(self.what, problem, status=code)
                yield kind, obj
        except stream.Malformed as err:
            raise KubeError(self.what, str(err)) from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise KubeError(self.what, f"the watch broke off: {type(err).__name__}: {err}") from None
        finally:
            self._response.release_conn()

    def stop(self) -> None:
        """End the watch from another thread: its `events` stop."""
        try:
            self._response.shutdown()
        except (OSError, AttributeError):
            pass


class Api:
    """The calls gpu-burnin makes, each with the retry discipline above."""

    def __init__(
        self,
        api_client: Any,
        *,
        namespace: str = TOOL_NAMESPACE,
        patience: Patience = Patience(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ):
        self._client = api_client
        self._core = _client().CoreV1Api(api_client)
        self.namespace = namespace
        """The tool's namespace: its Events and the remediator's Lease."""
        self.patience = patience
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    # -- nodes -------------------------------------------------------------------------------------

    def get_node(self, name: str) -> dict[str, Any]:
        return self._json(f'get node "{name}"', lambda t: self._core.read_node(name, **t))

    def list_nodes(self, selector: str) -> list[dict[str, Any]]:
        """Whole Node objects (for `status`, run by a person: it needs their allocatable GPUs and conditions),
        label-selected, from the watch cache (resourceVersion=0): the remediator reads metadata only."""
        found = self._json(
            f'list nodes "{selector}"',
            lambda t: self._core.list_node(label_selector=selector, resource_version="0", **t),
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def patch_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A strategic merge patch: maps merge, null deletes, spec.taints is replaced whole."""
        return self._patch(f'patch node "{name}"', f"/api/v1/nodes/{name}", body)

    def patch_node_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Through nodes/status: conditions merge by type."""
        return self._patch(f'patch node "{name}" status', f"/api/v1/nodes/{name}/status", body)

    def _patch(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A strategic merge patch sent with its own Content-Type through the client's transport: the
        generated methods of clients before 36 refuse `_content_type` (ApiTypeError) and choose the patch
        type themselves."""
        def call(t: dict[str, Any]) -> Any:
            return self._raw("PATCH", path, body=body, content_type=STRATEGIC, request_timeout=t["_request_timeout"])

        return self._json(what, call)

    def node_metadata(self, selector: str, keep: Callable[[dict[str, Any]], T]) -> tuple[list[T], str]:
        """The metadata of the nodes `selector` selects, from the API server's watch cache (resourceVersion=0,
        PartialObjectMetadata): `keep` of each, and the list's resourceVersion, to watch from. The answer is
        read a node at a time, never held whole."""
        what = f'list node metadata "{selector}"'

        def attempt(t: dict[str, Any]) -> tuple[list[T], str]:
            query = [("labelSelector", selector), ("resourceVersion", "0")]
            response = self._raw(
                "GET", "/api/v1/nodes", query=query, accept=METADATA_LIST, request_timeout=t["_request_timeout"]
            )
            kept: list[T] = []
            version = ""
            for name, value in self._members(what, response, "items"):
                if name == "items":
                    kept.append(keep(value.get("metadata") or {}))
                elif name == "metadata":
                    version = str((value or {}).get("resourceVersion") or "")
            return kept, version

        return self._attempt(what, attempt)

    def watch_node_metadata(self, selector: str, resource_version: str, timeout_s: int) -> Watch:
        """Changes to the selected nodes' metadata from `resource_version`, for at most `timeout_s` (the
        server ends the watch then; bookmarks keep the resourceVersion moving on a quiet fleet)."""
        what = f'watch node metadata "{selector}" from {resource_version}'
        timeouts = (self.patience.request_timeout_s, timeout_s + self.patience.request_timeout_s)
        query = [
            ("labelSelector", selector),
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_s)),
        ]
        response = self._attempt(
            what,
            lambda t: self._raw("GET", "/api/v1/nodes", query=query, accept=METADATA_WATCH, request_timeout=timeouts),
        )
        return Watch(what, response)

    def node_columns(self, selector: str) -> dict[str, Columns]:
        """Each selected node's Ready condition and cordon, from the Status column of the server-side
        Table ("Ready", "NotReady,SchedulingDisabled"; includeObject=None): what metadata cannot say,
        without reading whole nodes. A server that answers plain JSON instead gives whole nodes, read
        one at a time."""
        what = f'list node status columns "{selector}"'

        def attempt(t: dict[str, Any]) -> dict[str, Columns]:
            path = "/api/v1/nodes"
            query = [("labelSelector", selector), ("resourceVersion", "0"), ("includeObject", "None")]
            response = self._raw("GET", path, query=query, accept=TABLE, request_timeout=t["_request_timeout"])
            columns: list[str] = []
            rows: list[list[Any]] = []
            found: dict[str, Columns] = {}
            for name, value in self._members(what, response, "rows"):
                if name == "columnDefinitions":
                    columns = [str(c.get("name", "")) for c in value or []]
                elif name == "rows":
                    rows.append(list(value.get("cells") or []))
                elif name == "items":  # no Table here: a whole node
                    found[value["metadata"]["name"]] = _columns_of(value)
            if rows and not {"Name", "Status"} <= set(columns):
                raise KubeError(what, f"the Table has no Name and Status columns: {columns}")
            for cells in rows:
                row = dict(zip(columns, cells, strict=False))
                words = str(row.get("Status", "")).split(",")
                found[str(row["Name"])] = Columns(ready="Ready" in words, unschedulable="SchedulingDisabled" in words)
            return found

        return self._attempt(what, attempt)

    # -- pods ---------------------------------------------------------------------------------------

    def list_pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """Every pod bound to `node`, in every namespace (a field selector: the API server filters)."""
        found = self._json(
            f'list pods on node "{node}"',
            lambda t: self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", resource_version="0", **t
            ),
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        """The tool's own pods that `selector` selects, in the tool's namespace only (`status`: why a preflight
        is stuck), from the watch cache (resourceVersion=0)."""
        found = self._json(
            f'list pods "{selector}" in namespace "{self.namespace}"',
            lambda t: self._core.list_namespaced_pod(
                self.namespace, label_selector=selector, resource_version="0", **t
            ),
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def evict_pod(self, namespace: str, name: str) -> bool:
        """Through the Eviction API (pods/eviction), which respects PodDisruptionBudgets and the pod's
        own grace period. False when the pod is already gone (404); `Blocked` on 429."""
        k8s = _client()
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace))
        try:
            self._json(
                f'evict pod "{namespace}/{name}"',
                lambda t: self._core.create_namespaced_pod_eviction(name, namespace, body, **t),
                blocked_on_429=True,
            )
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete the pod, past any disruption budget (its own grace period still applies). False when it
        is gone already."""
        try:
            self._json(
                f'delete pod "{namespace}/{name}"', lambda t: self._core.delete_namespaced_pod(name, namespace, **t)
            )
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        return True

    # -- events -------------------------------------------------------------------------------------

    def create_event(self, event: dict[str, Any]) -> bool:
        """Create the Event in its namespace (the tool's). False when one of that name exists already: the
        names are derived from what they announce, so a retried Event is not posted twice."""
        namespace = event.get("metadata", {}).get("namespace") or self.namespace
        path = f"/api/v1/namespaces/{namespace}/events"
        try:
            self._raw_json(f'create event in namespace "{namespace}"', "POST", path, body=event)
        except Conflict:
            return False
        return True

    # -- leases -------------------------------------------------------------------------------------

    def get_lease(self, name: str) -> dict[str, Any] | None:
        """The Lease in the tool's namespace, or None when there is none."""
        path = f"{LEASES.format(namespace=self.namespace)}/{name}"
        try:
            return self._raw_json(f'get lease "{self.namespace}/{name}"', "GET", path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create it; `Conflict` when another replica created it first."""
        name = body["metadata"]["name"]
        return self._raw_json(
            f'create lease "{self.namespace}/{name}"', "POST", LEASES.format(namespace=self.namespace), body=body
        )

    def update_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace it, preconditioned on the resourceVersion in `body`: `Conflict` when it moved."""
        name = body["metadata"]["name"]
        path = f"{LEASES.format(namespace=self.namespace)}/{name}"
        return self._raw_json(f'update lease "{self.namespace}/{name}"', "PUT", path, body=body)

    # -- the discipline -------------------------------------------------------------------------------

    def _raw(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        accept: str = "application/json",
        content_type: str = "application/json",
        request_timeout: Any = None,
    ) -> Any:
        """A request through the client's own transport, its body sent as given (the typed models would
        write a Lease's MicroTime without its microseconds, which the API server refuses), with the headers
        given: the answer unread (urllib3's response). Works with both generations of the client's
        ApiClient: `param_serialize` and `call_api(method, url, ...)` from 36 on, `call_api(path, method,
        ...)` before."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        if not hasattr(self._client, "param_serialize"):  # a client before 36
            return self._client.call_api(
                path,
                method,
                {},
                query or [],
                headers,
                body=body,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=request_timeout,
            )
        request = self._client.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self._client.call_api(*request, _request_timeout=request_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def _raw_json(self, what: str, method: str, path: str, *, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._json(what, lambda t: self._raw(method, path, body=body, request_timeout=t["_request_timeout"]))

    def _members(self, what: str, response: Any, streamed: str) -> Iterator[tuple[str, Any]]:
        try:
            yield from stream.members(response.stream(1 << 16, decode_content=True), streamed)
        except stream.Malformed as err:
            raise KubeError(what, str(err)) from None
        finally:
            response.release_conn()

    def _json(
        self, what: str, call: Callable[[dict[str, Any]], Any], *, blocked_on_429: bool = False
    ) -> dict[str, Any]:
        """Make the call under the discipline; the answer's JSON body. `blocked_on_429`: raise `Blocked`
        on 429 instead of waiting (an eviction a disruption budget refuses may stay refused for hours)."""

        def attempt(t: dict[str, Any]) -> dict[str, Any]:
            data = call(t).data or b"{}"
            try:
                body: dict[str, Any] = json.loads(data)
            except ValueError as err:
                raise KubeError(what, f"the answer is not JSON: {err}") from None
            return body

        return self._attempt(what, attempt, blocked_on_429=blocked_on_429)

    def _attempt(self, what: str, attempt: Callable[[dict[str, Any]], T], *, blocked_on_429: bool = False) -> T:
        """Run `attempt` (a request and the reading of its answer) until it succeeds, under the discipline."""
        from kubernetes.client.exceptions import ApiException, OpenApiException

        began = self._clock()
        backoff = self.patience.first_backoff_s
        tries = 0
        while True:
            tries += 1
            try:
                return attempt({"_preload_content": False, "_request_timeout": self.patience.request_timeout_s})
            except ApiException as err:
                if blocked_on_429 and err.status == 429:
                    raise Blocked(what, f"HTTP 429: {_message(err)}", status=429) from None
                wait = self._after_api_error(what, err, backoff)
                last = f"HTTP {err.status}: {_message(err)}"
            except (urllib3.exceptions.HTTPError, OSError) as err:  # refused, reset, timed out
                wait = backoff * (0.5 + self._jitter())
                last = f"{type(err).__name__}: {err}"
            except OpenApiException as err:  # ApiTypeError, ApiValueError, ...: the client refused the call itself
                raise KubeError(what, f"the Kubernetes client refused the call: {type(err).__name__}: {err}") from None
            spent = self._clock() - began
            if spent + wait > self.patience.total_s:
                raise KubeError(what, f"gave up after {tries} attempts in {spent:.0f} s; last: {last}")
            self._sleep(wait)
            backoff = min(backoff * 2, self.patience.max_backoff_s)

    def _after_api_error(self, what: str, err: ApiException, backoff: float) -> float:
        """How long to wait before trying again; raises for what waiting cannot fix."""
        status = int(err.status or 0)
        if status == 409:
            raise Conflict(what, f"HTTP 409: {_message(err)}", status=status)
        if status == 422:
            why = "refused as invalid (the API server's validation or an admission policy)"
            problem = f"HTTP 422 Unprocessable Entity: {why}: {_message(err)}"
            raise Invalid(what, problem, status=status)
        if status == 401:
            raise KubeError(
                what,
                "HTTP 401 Unauthorized: the credentials were refused (kubeconfig token or service account)",
                status=401,
            )
        if status == 403:
            raise KubeError(what, f"HTTP 403 Forbidden: {_message(err)}; grant it as deploy/rbac.yaml does", status=403)
        if status == 404:
            raise KubeError(what, f"HTTP 404: {_message(err)}", status=404)
        if status == 410:
            raise Expired(what, f"HTTP 410: {_message(err)}", status=410)
        if status == 429:
            return _retry_after(err, default=backoff)
        if status >= 500:
            return backoff * (0.5 + self._jitter())  # jitter: a fleet of pods must not retry in step
        raise KubeError(what, f"HTTP {status}: {_message(err)}", status=status)


def _columns_of(node: dict[str, Any]) -> Columns:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return Columns(ready=ready, unschedulable=bool((node.get("spec") or {}).get("unschedulable")))


def connect(
    kubeconfig: Path | None,
    *,
    patience: Patience = Patience(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    namespace: str | None = None,
) -> Api:
    """From `kubeconfig`, else $KUBECONFIG or ~/.kube/config, else the pod's service account.
    A missing or broken configuration is a ConfigError naming the file: nothing has run yet.
    `namespace`: the tool's (Events, the Lease); default $POD_NAMESPACE, else gpu-burnin."""
    from kubernetes import client, config

    chosen = namespace or os.environ.get("POD_NAMESPACE") or TOOL_NAMESPACE
    if not _NAMESPACE.fullmatch(chosen) or len(chosen) > 63:
        shown = chosen[:80].encode("unicode_escape").decode("ascii")
        source = "--namespace" if namespace else "POD_NAMESPACE"
        raise ConfigError(f"{shown!r} is not a namespace name (lower-case letters, digits and '-')", option=source)

    configuration = client.Configuration()
    if kubeconfig is not None:
        _load_kubeconfig(kubeconfig, configuration, option="--kubeconfig")
    elif os.environ.get("KUBECONFIG"):
        # kubectl's rule: the first file in the list that exists is the one read.
        paths = [Path(p) for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
        found = next((p for p in paths if p.is_file()), None)
        if found is None:
            raise ConfigError("none of the files in $KUBECONFIG exists", file=os.environ["KUBECONFIG"])
        _load_kubeconfig(found, configuration, option="KUBECONFIG")
    elif (default := Path(config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser()).is_file():
        _load_kubeconfig(default, configuration, option="--kubeconfig")
    else:
        _load_in_cluster(configuration)
    _check_server(configuration.host, kubeconfig or os.environ.get("KUBECONFIG") or "the in-cluster configuration")
    configuration.retries = False  # the retries are ours, with backoff and a time bound
    return Api(client.ApiClient(configuration), namespace=chosen, patience=patience, sleep=sleep, clock=clock)


def _load_kubeconfig(path: Path, configuration: Any, *, option: str) -> None:
    """Read a kubeconfig as kubectl would, after checking its shape ourselves: the client answers
    bad YAML, a scalar or a list, a Python tag or bytes that are not UTF-8 with a traceback."""
    import yaml
    from kubernetes import config

    if not files.is_file(path, option=option):
        raise ConfigError("no such kubeconfig file", file=path, option=option)
    try:
        text = files.read_regular(path, option=option).decode("utf-8")
        document = yaml.safe_load(text)  # safe: a !!python/object tag is refused, never run
    except OSError as err:
        raise ConfigError(f"cannot read the kubeconfig: {err.strerror}", file=path, option=option) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start})", file=path, option=option) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"not a YAML kubeconfig: {problem}{where}", file=path, option=option) from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ConfigError(f"not a kubeconfig: a YAML mapping is needed, this is a {kind}", file=path, option=option)
    for key in ("clusters", "users", "contexts"):
        if not isinstance(document.get(key) or [], list):
            raise ConfigError(f"{key} must be a list", file=path, option=option)
    try:
        config.load_kube_config(config_file=str(path), client_configuration=configuration)  # type: ignore[no-untyped-call]
    except Exception as err:  # noqa: BLE001 - the client raises many kinds for a bad file; each is one line here
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"cannot load the kubeconfig: {problem}", file=path, option=option) from None


def _load_in_cluster(configuration: Any) -> None:
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException as err:
        problem = f"no kubeconfig, and not in a pod with a service account: {err}"
        raise ConfigError(problem, file="the in-cluster service account", option="--kubeconfig") from None


def _check_server(host: str, source: Path | str) -> None:
    """The API server must be an https:// (or http://) URL with a host: anything else would only
    be found out by a retry loop that cannot succeed."""
    parts = urlsplit(host or "")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("https", "http") or not parts.hostname or any(c.isspace() for c in host):
        shown = (host or "")[:120].encode("unicode_escape").decode("ascii")
        raise ConfigError(f"the API server {shown!r} is not an https:// URL", file=source, option="--kubeconfig")


def _client() -> Any:
    """The client's models and APIs, imported when first needed: a command that talks to no API
    server (`gpu-burnin run` on a GPU box) needs no Kubernetes client installed."""
    from kubernetes import client

    return client


def _message(err: ApiException) -> str:
    """The API server's own message (a Status object), else the HTTP reason."""
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except (ValueError, AttributeError):
        return str(err.reason)


def _retry_after(err: ApiException, *, default: float) -> float:
    headers = err.headers or {}
    try:
        return max(0.0, float(headers.get("Retry-After", default)))
    except (TypeError, ValueError):
        return default
