"""The Kubernetes API, through the official client. The only module that imports `kubernetes`.

It offers the few calls the entrypoints make (read, list and patch nodes, patch
node status, create events; for the watch, list a node's pods and evict them), on
plain JSON dicts, with one discipline for every
call: 429 waits as long as Retry-After says; 5xx answers, timeouts and refused
connections are retried with exponential backoff and jitter, bounded in total time;
409 and 422 (a stale resourceVersion, a failed JSON Patch test) raise `Conflict`
for the caller to re-read and retry; 401, 403 and 404 raise at once with what was
missing. Every error the client raises becomes a `KubeError` here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import urllib3

from harness.errors import ConfigError

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException

STRATEGIC = "application/strategic-merge-patch+json"
EVENTS_NAMESPACE = "default"
"""Events about a Node, which has no namespace, go where the kubelet puts its own."""


class KubeError(Exception):
    """An API call that did not succeed, in one line: what was asked, and why it failed."""

    def __init__(self, what: str, problem: str, *, status: int | None = None):
        self.what = what
        self.problem = problem
        self.status = status
        super().__init__(f"{what}: {problem}")


class Conflict(KubeError):
    """The node changed between our read and our write (409), or a JSON Patch test failed (422)."""


class Blocked(KubeError):
    """An eviction refused for now (429): a PodDisruptionBudget allows no disruption at the moment, or
    the API server is shedding load. Not an error: the caller tries again later, not in a loop here."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Patience:
    """How long to keep trying one call."""

    total_s: float = 60.0
    """Give up on a call after this long, retries and waits included."""
    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    request_timeout_s: float = 10.0
    """Per request: a server that accepts the connection and then says nothing is a timeout."""


class Api:
    """The calls gpu-burnin makes, each with the retry discipline above."""

    def __init__(
        self,
        api_client: Any,
        *,
        patience: Patience = Patience(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ):
        self._core = _client().CoreV1Api(api_client)
        self.patience = patience
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    def get_node(self, name: str) -> dict[str, Any]:
        return self._json(f'get node "{name}"', lambda t: self._core.read_node(name, **t))

    def list_nodes(self, selector: str) -> list[dict[str, Any]]:
        found = self._json(f'list nodes "{selector}"', lambda t: self._core.list_node(label_selector=selector, **t))
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    def patch_node(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A strategic merge patch: maps merge, null deletes, spec.taints is replaced whole."""
        return self._json(
            f'patch node "{name}"', lambda t: self._core.patch_node(name, body, _content_type=STRATEGIC, **t)
        )

    def patch_node_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Through nodes/status: conditions merge by type."""
        return self._json(
            f'patch node "{name}" status',
            lambda t: self._core.patch_node_status(name, body, _content_type=STRATEGIC, **t),
        )

    def list_pods_on_node(self, node: str) -> list[dict[str, Any]]:
        """Every pod bound to `node`, in every namespace (a field selector: the API server filters)."""
        found = self._json(
            f'list pods on node "{node}"',
            lambda t: self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", **t),
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

    def create_event(self, event: dict[str, Any]) -> dict[str, Any]:
        namespace = event.get("metadata", {}).get("namespace", EVENTS_NAMESPACE)
        model = _client().CoreV1Event.from_dict(event)
        if model is None:
            raise ValueError("an event needs a body")
        return self._json(
            f'create event in namespace "{namespace}"',
            lambda t: self._core.create_namespaced_event(namespace, model, **t),
        )

    def _json(
        self, what: str, call: Callable[[dict[str, Any]], Any], *, blocked_on_429: bool = False
    ) -> dict[str, Any]:
        """Make the call under the discipline; the answer's JSON body. `blocked_on_429`: raise `Blocked`
        on 429 instead of waiting (an eviction a disruption budget refuses may stay refused for hours)."""
        from kubernetes.client.exceptions import ApiException

        began = self._clock()
        backoff = self.patience.first_backoff_s
        attempt = 0
        while True:
            attempt += 1
            try:
                response = call({"_preload_content": False, "_request_timeout": self.patience.request_timeout_s})
                body: dict[str, Any] = json.loads(response.data or b"{}")
                return body
            except ApiException as err:
                if blocked_on_429 and err.status == 429:
                    raise Blocked(what, f"HTTP 429: {_message(err)}", status=429) from None
                wait = self._after_api_error(what, err, backoff)
                last = f"HTTP {err.status}: {_message(err)}"
            except (urllib3.exceptions.HTTPError, OSError) as err:  # refused, reset, timed out
                wait = backoff * (0.5 + self._jitter())
                last = f"{type(err).__name__}: {err}"
            spent = self._clock() - began
            if spent + wait > self.patience.total_s:
                raise KubeError(what, f"gave up after {attempt} attempts in {spent:.0f} s; last: {last}")
            self._sleep(wait)
            backoff = min(backoff * 2, self.patience.max_backoff_s)

    def _after_api_error(self, what: str, err: ApiException, backoff: float) -> float:
        """How long to wait before trying again; raises for what waiting cannot fix."""
        status = int(err.status or 0)
        if status in (409, 422):
            raise Conflict(what, f"HTTP {status}: {_message(err)}", status=status)
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
        if status == 429:
            return _retry_after(err, default=backoff)
        if status >= 500:
            return backoff * (0.5 + self._jitter())  # jitter: a fleet of pods must not retry in step
        raise KubeError(what, f"HTTP {status}: {_message(err)}", status=status)


def connect(
    kubeconfig: Path | None,
    *,
    patience: Patience = Patience(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Api:
    """From `kubeconfig`, else $KUBECONFIG or ~/.kube/config, else the pod's service account.
    A missing or broken configuration is a ConfigError naming the file: nothing has run yet."""
    from kubernetes import client, config

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
    return Api(client.ApiClient(configuration), patience=patience, sleep=sleep, clock=clock)


def _load_kubeconfig(path: Path, configuration: Any, *, option: str) -> None:
    """Read a kubeconfig as kubectl would, after checking its shape ourselves: the client answers
    bad YAML, a scalar or a list, a Python tag or bytes that are not UTF-8 with a traceback."""
    import yaml
    from kubernetes import config

    if not path.is_file():
        raise ConfigError("no such kubeconfig file", file=path, option=option)
    try:
        text = path.read_bytes().decode("utf-8")
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
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
    except Exception as err:  # noqa: BLE001 - the client raises many kinds for a bad file; each is one line here
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"cannot load the kubeconfig: {problem}", file=path, option=option) from None


def _load_in_cluster(configuration: Any) -> None:
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config(client_configuration=configuration)
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
