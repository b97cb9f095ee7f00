"""The Kubernetes client at the versions the project pins (constraints.txt) and at the floors pyproject.toml
declares: the patch path must not depend on keyword arguments only newer clients take, every exception the
client raises becomes a KubeError at the one boundary (harness/kube/api.py), a 422 is said as the validation
error it is, and the pins cover every runtime dependency and satisfy its floor."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path

import pytest

from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import Invalid, KubeError, Patience, connect
from harness.kube.node import Marks
from tests.kube_fake import FakeApiServer

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


@pytest.fixture
def api(server, tmp_path):
    return connect(server.kubeconfig(tmp_path / "kubeconfig"), patience=Patience(total_s=5), sleep=lambda _: None)


def refuse_content_type(original):
    """What the generated methods of clients before 36 do with `_content_type`: ApiTypeError."""
    from kubernetes.client.exceptions import ApiTypeError

    def method(self, *args, **kwargs):
        if "_content_type" in kwargs or "_headers" in kwargs:
            raise ApiTypeError(f"Got an unexpected keyword argument '{next(iter(kwargs))}' to method patch_node")
        return original(self, *args, **kwargs)

    return method


def test_patches_and_metadata_lists_need_no_keyword_only_newer_clients_take(server, api, monkeypatch):
    from kubernetes.client import CoreV1Api

    for name in ("patch_node", "patch_node_status", "list_node"):
        monkeypatch.setattr(CoreV1Api, name, refuse_content_type(getattr(CoreV1Api, name)))
    server.add_node("n1", labels={"gpu-burnin/preflight": "pending"})
    patched = api.patch_node("n1", {"metadata": {"labels": {"gpu-burnin/preflight": None}}})
    assert "gpu-burnin/preflight" not in patched["metadata"].get("labels", {})
    api.patch_node_status("n1", {"status": {"conditions": [{"type": "X", "status": "True"}]}})
    kept, version = api.node_metadata("", lambda m: m["name"])
    assert kept == ["n1"] and version
    sent = [(r.method, r.content_type) for r in server.requests if r.method == "PATCH"]
    assert sent == [("PATCH", "application/strategic-merge-patch+json")] * 2


@pytest.mark.parametrize("kind", ["ApiTypeError", "ApiValueError", "ApiKeyError", "ApiAttributeError"])
def test_any_exception_the_client_raises_becomes_a_kube_error(server, api, monkeypatch, kind):
    from kubernetes.client import CoreV1Api, exceptions

    def broken(self, *args, **kwargs):
        raise getattr(exceptions, kind)("the client refused it")

    monkeypatch.setattr(CoreV1Api, "read_node", broken)
    with pytest.raises(KubeError, match=f'get node "n1": the Kubernetes client refused the call: {kind}'):
        api.get_node("n1")


def test_a_422_is_a_validation_error_said_as_such_not_a_conflict(server, api):
    server.add_node("n1", labels={"gpu-burnin/preflight": "pending"})
    server.fail("PATCH", "/api/v1/nodes/n1", 422, message='nodes "n1" is forbidden: gpu-burnin/x is not ours')
    marks = Marks()
    with pytest.raises(Invalid) as caught:
        actions.update(api, "n1", lambda n: nodes.patch(n, set_labels={marks.preflight_label.key: None}))
    said = str(caught.value)
    assert caught.value.status == 422 and "422 Unprocessable Entity" in said and "gpu-burnin/x is not ours" in said
    assert "changed under every" not in said
    assert [r.method for r in server.requests] == ["GET", "PATCH"]  # not retried


# -- the pins ------------------------------------------------------------------------------------------


def _requirement(text: str) -> tuple[str, str, str]:
    found = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(==|>=)\s*([^\s;#]+)\s*(?:#.*)?", text)
    assert found, text
    return _canonical(found[1]), found[2], found[3]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:4])


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, op, version = _requirement(line)
            assert op == "==", f"constraints.txt pins exact versions: {line}"
            found[name] = version
    return found


def floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for line in project["dependencies"] + project["optional-dependencies"]["s3"]:
        name, op, version = _requirement(line)
        assert op == ">=", line
        found[name] = version
    return found


def test_constraints_pin_every_runtime_dependency_at_or_above_its_floor():
    pinned, floor = pins(), floors()
    missing = sorted(set(floor) - set(pinned) - {"torch"})  # the image brings its own torch
    assert missing == [], f"constraints.txt does not pin {missing}"
    low = {n: (pinned[n], floor[n]) for n in floor if n in pinned and _version(pinned[n]) < _version(floor[n])}
    assert low == {}


def test_the_kubernetes_floor_is_the_version_tested():
    assert _version(floors()["kubernetes"]) == _version(pins()["kubernetes"])

