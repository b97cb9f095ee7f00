"""The fake API server, through the real `kubernetes` client: what the harness's scenario tests rely on."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube_fake import DEFAULT_USER, FakeApiServer

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CONFLICT = (
    'Operation cannot be fulfilled on nodes "n1": the object has been modified; '
    "please apply your changes to the latest version and try again"
)
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
BURNIN_TAINT = {"key": "gpu-burnin/testing", "effect": "NoExecute"}


@contextmanager
def connected(kubeconfig: Path) -> Iterator[client.CoreV1Api]:
    """A client as the harness configures one: urllib3's own retries off (by default they would retry a GET
    answered 429 or 503 with Retry-After, hiding the answer from the caller)."""
    configuration = client.Configuration()
    configuration.retries = False
    api_client = config.new_client_from_config(config_file=str(kubeconfig), client_configuration=configuration)
    try:
        yield client.CoreV1Api(api_client)
    finally:
        api_client.close()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def core(api: FakeApiServer, tmp_path: Path) -> Iterator[client.CoreV1Api]:
    with connected(api.kubeconfig(tmp_path / "kubeconfig")) as core_api:
        yield core_api


def patch(core: client.CoreV1Api, body: Any, content_type: str = SMP, *, status: bool = False, **kw: Any) -> dict:
    """PATCH node n1 (or n1/status) as the harness does: a content type, the raw JSON answer."""
    call = core.patch_node_status if status else core.patch_node
    return json.loads(call("n1", body, _content_type=content_type, _preload_content=False, **kw).data)


def failure(call: Callable[[], Any]) -> tuple[ApiException, dict]:
    """The ApiException `call` raises, and its body parsed as the Status object it must be."""
    with pytest.raises(ApiException) as caught:
        call()
    body = json.loads(caught.value.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == caught.value.status and body["metadata"] == {}
    return caught.value, body


def raw(
    api: FakeApiServer, method: str, path: str, body: bytes | None = None, content_type: str = ""
) -> tuple[int, dict]:
    """A request the client would never send (a malformed body, a non-API path)."""
    headers = {"Authorization": f"Bearer {api.token}"} | ({"Content-Type": content_type} if content_type else {})
    response = urllib3.PoolManager().request(method, api.url + path, body=body, headers=headers, retries=False)
    return response.status, response.json()


def labels(node: dict) -> dict[str, str]:
    return {k: v for k, v in node["metadata"].get("labels", {}).items() if not k.startswith("kubernetes.io/")}


# -- nodes as created --------------------------------------------------------------------------------


def test_a_node_looks_like_one_a_kubelet_registered(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1", created="2025-01-02T03:04:05Z")
    typed = core.read_node("n1")  # the client's own models accept it
    assert typed.metadata.name == "n1" and typed.metadata.uid
    assert typed.status.capacity["nvidia.com/gpu"] == "8"
    assert [(c.type, c.status) for c in typed.status.conditions] == [("Ready", "True")]
    node = json.loads(core.read_node("n1", _preload_content=False).data)
    assert node["kind"] == "Node" and node["apiVersion"] == "v1"
    assert node["metadata"]["creationTimestamp"] == "2025-01-02T03:04:05Z"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1" and node["metadata"]["annotations"]
    assert node["spec"] == {}, "taints only when given, unschedulable only when true"
    assert node == api.node("n1")

    second = api.add_node(
        "n2",
        labels={"gpu": "h100"},
        taints=[GPU_TAINT],
        unschedulable=True,
        conditions=[{"type": "Ready", "status": "False"}, {"type": "GPUBurnIn", "status": "True"}],
    )
    assert second["spec"] == {"taints": [GPU_TAINT], "unschedulable": True}
    assert [(c["type"], c["status"]) for c in second["status"]["conditions"]] == [
        ("Ready", "False"),
        ("GPUBurnIn", "True"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", second["metadata"]["creationTimestamp"])
    assert int(second["metadata"]["resourceVersion"]) > int(node["metadata"]["resourceVersion"])
    second["metadata"]["labels"]["gpu"] = "changed"
    assert api.node("n2")["metadata"]["labels"]["gpu"] == "h100", "node() and add_node() answer copies"


def test_add_node_refuses_what_the_server_would():
    server = FakeApiServer()  # no need to serve: the state is there before start()
    server.add_node("n1")
    with pytest.raises(ValueError, match="already exists"):
        server.add_node("n1")
    with pytest.raises(ValueError, match=r'spec.taints\[0\].effect: Unsupported value: "Sometimes"'):
        server.add_node("n2", taints=[{"key": "k", "effect": "Sometimes"}])


def test_uids_and_generated_names_are_the_same_on_every_run():
    first, second = FakeApiServer(), FakeApiServer()
    assert first.add_node("n1")["metadata"]["uid"] == second.add_node("n1")["metadata"]["uid"]
    assert first._generated_name("default", "n1.") == second._generated_name("default", "n1.")


# -- authentication, authorization, routing ------------------------------------------------------


@pytest.mark.parametrize("token", ["", "wrong-token"], ids=["no token", "wrong token"])
def test_requests_without_the_servers_bearer_token_are_401(api: FakeApiServer, tmp_path: Path, token: str):
    api.add_node("n1")
    with connected(api.kubeconfig(tmp_path / "kubeconfig", token=token)) as core:
        error, body = failure(lambda: core.read_node("n1"))
    assert error.status == 401 and body["reason"] == "Unauthorized" and body["message"] == "Unauthorized"
    assert api.requests[-1].status == 401


def test_kubeconfig_into_a_directory_names_the_file(api: FakeApiServer, tmp_path: Path):
    path = api.kubeconfig(tmp_path)
    assert path == tmp_path / "kubeconfig"
    document = json.loads(path.read_text())
    assert document["current-context"] == "fake" and document["clusters"][0]["cluster"]["server"] == api.url


def test_a_missing_node_is_404_for_every_verb(api: FakeApiServer, core: client.CoreV1Api):
    for call in (
        lambda: core.read_node("ghost"),
        lambda: core.patch_node("ghost", {"metadata": {}}, _content_type=SMP),
        lambda: core.patch_node_status("ghost", {"status": {}}, _content_type=SMP),
    ):
        error, body = failure(call)
        assert error.status == 404 and body["reason"] == "NotFound"
        assert body["message"] == 'nodes "ghost" not found' and body["details"] == {"name": "ghost", "kind": "nodes"}


def test_a_removed_node_is_404(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    api.remove_node("n1")
    assert failure(lambda: core.read_node("n1"))[0].status == 404


@pytest.mark.parametrize(
    ("forbidden", "call", "message"),
    [
        (
            ("patch", "nodes", ""),
            lambda core: core.patch_node("n1", {"metadata": {}}, _content_type=SMP),
            f'nodes "n1" is forbidden: User "{DEFAULT_USER}" cannot patch resource "nodes" in API group "" '
            "at the cluster scope",
        ),
        (
            ("patch", "nodes", "status"),
            lambda core: core.patch_node_status("n1", {"status": {}}, _content_type=SMP),
            f'nodes "n1" is forbidden: User "{DEFAULT_USER}" cannot patch resource "nodes/status" in API group "" '
            "at the cluster scope",
        ),
        (
            ("list", "nodes", ""),
            lambda core: core.list_node(),
            f'nodes is forbidden: User "{DEFAULT_USER}" cannot list resource "nodes" in API group "" '
            "at the cluster scope",
        ),
        (
            ("get", "nodes", ""),
            lambda core: core.read_node("ghost"),  # authorization comes before the lookup: 403, not 404
            f'nodes "ghost" is forbidden: User "{DEFAULT_USER}" cannot get resource "nodes" in API group "" '
            "at the cluster scope",
        ),
        (
            ("create", "events", ""),
            lambda core: core.create_namespaced_event("default", node_event("n1")),
            f'events is forbidden: User "{DEFAULT_USER}" cannot create resource "events" in API group "" '
            'in the namespace "default"',
        ),
    ],
    ids=["patch nodes", "patch nodes/status", "list nodes", "get nodes", "create events"],
)
def test_forbid_answers_403_with_rbacs_message(
    api: FakeApiServer, core: client.CoreV1Api, forbidden: tuple[str, str, str], call: Callable, message: str
):
    api.add_node("n1")
    verb, resource, subresource = forbidden
    api.forbid(verb, resource, subresource=subresource)
    error, body = failure(lambda: call(core))
    assert error.status == 403 and body["reason"] == "Forbidden" and body["message"] == message
    assert body["details"]["kind"] == resource


def test_forbidding_a_subresource_leaves_the_resource_allowed(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    api.forbid("patch", "nodes", subresource="status")
    assert patch(core, {"metadata": {"labels": {"a": "1"}}})["metadata"]["labels"]["a"] == "1"
    with pytest.raises(ValueError, match="verb must be one of"):
        api.forbid("deletecollection", "nodes")


def test_unknown_paths_are_404_and_unknown_methods_405_with_a_status(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    error, body = failure(lambda: core.list_service_for_all_namespaces())
    assert error.status == 404 and body["reason"] == "NotFound"
    error, body = failure(lambda: core.delete_node("n1"))
    assert error.status == 405 and body["reason"] == "MethodNotAllowed"
    assert raw(api, "POST", "/api/v1/nodes", b"{}")[0] == 405
    assert raw(api, "OPTIONS", "/api/v1/nodes/n1")[0] == 405


# -- list and selectors ------------------------------------------------------------------------------------


@pytest.fixture
def fleet(api: FakeApiServer) -> FakeApiServer:
    api.add_node("a", labels={"gpu": "h100", "zone": "x", "tier": "3"})
    api.add_node("b", labels={"gpu": "h200", "zone": "y", "drained": "true"}, unschedulable=True)
    api.add_node("c", labels={"zone": "x"})
    return api


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("", "abc"),
        ("gpu=h100", "a"),
        ("gpu==h100", "a"),
        ("gpu!=h100", "bc"),  # an absent key satisfies !=
        ("gpu", "ab"),
        ("!gpu", "c"),
        ("gpu in (h100,h200)", "ab"),
        ("gpu notin (h100)", "bc"),
        ("zone=x,gpu", "a"),
        ("zone in (x), !drained", "ac"),
        ("zone in (x,)", "ac"),
        ("tier>2", "a"),
        ("tier<2", ""),
        ("gpu=", ""),
        ("gpu in ()", ""),
        ("zone in (,x)", "ac"),
        ("zone in (x,,y)", "abc"),
        ("kubernetes.io/os=linux", "abc"),
    ],
)
def test_list_filters_by_label_selector(fleet: FakeApiServer, core: client.CoreV1Api, selector: str, names: str):
    found = json.loads(core.list_node(label_selector=selector, _preload_content=False).data)
    assert "".join(item["metadata"]["name"] for item in found["items"]) == names


@pytest.mark.parametrize(
    "selector",
    [
        "gpu in h100",
        "gpu=(",
        "=x",
        "gpu,",
        "gpu in (a b)",
        "tier>x",
        "gpu=a=b",
        "bad/key/x",
        "!(",
        "!gpu=x",
        "gpu ! x",
        "gpu=-x",
        "gpu in (=)",
        "gpu in (a,=)",
    ],
)
def test_a_malformed_label_selector_is_400(fleet: FakeApiServer, core: client.CoreV1Api, selector: str):
    error, body = failure(lambda: core.list_node(label_selector=selector))
    assert error.status == 400 and body["reason"] == "BadRequest"


def test_a_list_is_a_node_list_at_the_latest_resource_version(fleet: FakeApiServer, core: client.CoreV1Api):
    found = json.loads(core.list_node(_preload_content=False).data)
    assert found["kind"] == "NodeList" and found["apiVersion"] == "v1"
    assert found["metadata"]["resourceVersion"] == fleet.node("c")["metadata"]["resourceVersion"]
    assert all("kind" not in item and "apiVersion" not in item for item in found["items"])
    assert [n.metadata.name for n in core.list_node(label_selector="zone=x").items] == ["a", "c"]


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("metadata.name=b", "b"),
        ("metadata.name!=b", "ac"),
        ("spec.unschedulable=true", "b"),
        ("", "abc"),
        (r"metadata.name=a\,b", ""),
    ],
)
def test_list_filters_by_field_selector(fleet: FakeApiServer, core: client.CoreV1Api, selector: str, names: str):
    found = core.list_node(field_selector=selector)
    assert "".join(n.metadata.name for n in found.items) == names


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda core: core.list_node(field_selector="status.phase=Ready"), "field label not supported: status.phase"),
        (lambda core: core.list_node(field_selector="metadata.name"), "can't understand 'metadata.name'"),
        (lambda core: core.list_node(field_selector=r"metadata.name=a\x"), "invalid escape sequence"),
        (lambda core: core.list_node(field_selector="metadata.name=a=b"), "unescaped literal '='"),
        (
            lambda core: core.list_namespaced_event("default", watch=True, _preload_content=False),
            "does not serve watches",
        ),
    ],
)
def test_field_selectors_and_watches_the_server_cannot_serve_are_400(
    fleet: FakeApiServer, core: client.CoreV1Api, call: Callable, message: str
):
    error, body = failure(lambda: call(core))
    assert error.status == 400 and message in body["message"]


# -- strategic merge patch -------------------------------------------------------------------------------


def test_strategic_merge_replaces_the_taint_list_whole_and_null_deletes_a_label(
    api: FakeApiServer, core: client.CoreV1Api
):
    before = api.add_node(
        "n1", labels={"keep": "1", "drop": "1"}, annotations={"note": "x"}, taints=[GPU_TAINT, BURNIN_TAINT]
    )
    body = {
        "metadata": {"labels": {"drop": None, "added": "y"}, "resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"taints": [GPU_TAINT]},
    }
    after = patch(core, body)
    assert labels(after) == {"keep": "1", "added": "y"}
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"], "annotations untouched"
    assert after["spec"]["taints"] == [GPU_TAINT], "no merge key: the list is replaced, not merged"
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after == api.node("n1")

    emptied = patch(core, {"spec": {"taints": [], "unschedulable": False}})
    assert emptied["spec"] == {}, "an empty list and false are omitted, as the Go types' omitempty does"


def test_conditions_and_addresses_merge_by_type_through_nodes_status(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1", conditions=[{"type": "GPUBurnIn", "status": "False", "reason": "Running"}])
    body = {
        "status": {
            "conditions": [
                {"type": "GPUBurnIn", "status": "True", "reason": "Passed"},
                {"type": "Extra", "status": "True"},
            ],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
        }
    }
    status = patch(core, body, status=True)["status"]
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Ready", "True"),
        ("GPUBurnIn", "True"),
        ("Extra", "True"),
    ], "a known type merges in place, a new one is appended"
    burnin = status["conditions"][1]
    assert burnin["reason"] == "Passed" and "lastTransitionTime" in burnin, "merged field by field"
    assert [a["type"] for a in status["addresses"]] == ["Hostname", "InternalIP"]

    deleted = patch(core, {"status": {"conditions": [{"type": "Extra", "$patch": "delete"}]}}, status=True)
    assert [c["type"] for c in deleted["status"]["conditions"]] == ["Ready", "GPUBurnIn"]


def test_strategic_merge_directives_and_merged_scalar_lists(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1", annotations={"note": "x"})
    assert patch(core, {"metadata": {"finalizers": ["a"]}})["metadata"]["finalizers"] == ["a"]
    assert patch(core, {"metadata": {"finalizers": ["b", "a"]}})["metadata"]["finalizers"] == ["a", "b"]
    removed = patch(core, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert removed["metadata"]["finalizers"] == ["b"]
    replaced = patch(core, {"metadata": {"annotations": {"$patch": "replace", "only": "1"}}})
    assert replaced["metadata"]["annotations"] == {"only": "1"}
    assert "annotations" not in patch(core, {"metadata": {"annotations": {"$patch": "delete"}}})["metadata"]
    conditions = [{"type": "Only", "status": "True"}, {"$patch": "replace"}]
    assert patch(core, {"status": {"conditions": conditions}}, status=True)["status"]["conditions"] == conditions[:1]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"metadata": {"$setElementOrder/finalizers": ["a"]}}, 400),
        ({"metadata": {"$patch": "explode"}}, 500),  # passed through unconverted, as a 500
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, 400),
        ([{"metadata": {}}], 400),
        ({"status": {"conditions": [{"status": "True"}]}}, 500),  # no merge key: strategicpatch's error, unconverted
    ],
)
def test_strategic_merge_patches_the_server_cannot_apply(
    api: FakeApiServer, core: client.CoreV1Api, body: Any, code: int
):
    before = api.add_node("n1")
    error, _ = failure(lambda: patch(core, body, status=True))
    assert error.status == code and api.node("n1") == before


# -- the patches the harness does not send ---------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [MERGE, JSON_PATCH, "application/apply-patch+yaml", "application/json"])
def test_patches_other_than_strategic_merge_are_415(api: FakeApiServer, core: client.CoreV1Api, content_type: str):
    api.add_node("n1")
    # The client sends a JSON Patch content type only with a list body (a dict goes as a strategic merge).
    document = [{"op": "test", "path": "/metadata/name", "value": "n1"}] if content_type == JSON_PATCH else {}
    error, body = failure(lambda: patch(core, document, content_type))
    assert error.status == 415 and body["reason"] == "UnsupportedMediaType"
    assert SMP in body["message"]


# -- what a write may change, and its resourceVersion ---------------------------------------------------


def test_the_main_resource_ignores_status_and_nodes_status_ignores_spec(api: FakeApiServer, core: client.CoreV1Api):
    before = api.add_node("n1")
    unchanged = patch(core, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert unchanged == before, "a status-only patch of the node is a no-op: 200, same resourceVersion"
    after = patch(core, {"spec": {"unschedulable": True}, "status": {"capacity": {"nvidia.com/gpu": "7"}}}, status=True)
    assert after["spec"] == {} and after["status"]["capacity"]["nvidia.com/gpu"] == "7"
    # nodeStatusStrategy resets spec only: metadata written through nodes/status is kept, as on a real server
    assert (
        patch(core, {"metadata": {"labels": {"via": "status"}}}, status=True)["metadata"]["labels"]["via"] == "status"
    )


def test_every_write_bumps_one_global_resource_version(api: FakeApiServer, core: client.CoreV1Api):
    assert [api.add_node(n)["metadata"]["resourceVersion"] for n in ("n1", "n2")] == ["1", "2"]
    assert patch(core, {"metadata": {"labels": {"a": "1"}}})["metadata"]["resourceVersion"] == "3"
    core.create_namespaced_event("default", node_event("n1"))
    assert core.read_node("n2").metadata.resource_version == "2"
    assert patch(core, {"metadata": {"labels": {"a": "1"}}})["metadata"]["resourceVersion"] == "3", "no-op: no write"
    api.edit_node("n2", lambda node: node["metadata"]["labels"].update(edited="1"))
    assert api.node("n2")["metadata"]["resourceVersion"] == "5"
    assert core.list_node().metadata.resource_version == "5"


def test_a_stale_resource_version_is_409_and_changes_nothing(api: FakeApiServer, core: client.CoreV1Api):
    read = api.add_node("n1", taints=[GPU_TAINT])
    api.edit_node("n1", lambda node: node["metadata"]["labels"].update(other="writer"))
    edited = api.node("n1")
    stale = {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"]}, "spec": {"taints": []}}
    for status in (False, True):
        error, body = failure(lambda: patch(core, stale, status=status))  # noqa: B023 - called at once
        assert error.status == 409 and body["reason"] == "Conflict" and body["message"] == CONFLICT
        assert body["details"] == {"name": "n1", "kind": "nodes"}
        assert api.node("n1") == edited
    fresh = {**stale, "metadata": {"resourceVersion": edited["metadata"]["resourceVersion"]}}
    assert "taints" not in patch(core, fresh)["spec"]
    unconditional = patch(core, {"metadata": {"resourceVersion": None, "labels": {"x": "1"}}})
    assert unconditional["metadata"]["labels"]["x"] == "1"


def test_another_writer_between_our_get_and_our_patch(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1", taints=[GPU_TAINT])
    api.after(
        "GET", "/api/v1/nodes/n1", lambda s: s.edit_node("n1", lambda n: n["spec"]["taints"].append(BURNIN_TAINT))
    )
    read = json.loads(core.read_node("n1", _preload_content=False).data)
    assert read["spec"]["taints"] == [GPU_TAINT], "the answer left before the other writer's change"
    body = {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"]}, "spec": {"taints": []}}
    assert failure(lambda: patch(core, body))[0].status == 409
    reread = core.read_node("n1")  # the hook ran once: this read is not followed by another change
    assert [t.key for t in reread.spec.taints] == ["nvidia.com/gpu", "gpu-burnin/testing"]
    body["metadata"]["resourceVersion"] = reread.metadata.resource_version
    assert "taints" not in patch(core, body)["spec"]


def test_before_runs_ahead_of_the_request_and_every_matching_hook_runs(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    seen: list[str] = []
    api.before("PATCH", r"/api/v1/nodes/n1(/status)?", lambda s: s.edit_node("n1", lambda n: None), times=2)
    api.before("*", ".*", lambda s: seen.append(s.requests[-1].method))
    rv = api.node("n1")["metadata"]["resourceVersion"]
    assert failure(lambda: patch(core, {"metadata": {"resourceVersion": rv}}))[0].status == 409
    rv = api.node("n1")["metadata"]["resourceVersion"]
    assert failure(lambda: patch(core, {"metadata": {"resourceVersion": rv}}, status=True))[0].status == 409
    assert patch(core, {"metadata": {"resourceVersion": api.node("n1")["metadata"]["resourceVersion"]}})
    assert seen == ["PATCH"], "times=1 by default"
    with pytest.raises(ValueError, match="at least 1"):
        api.after("GET", ".*", lambda s: None, times=0)


def test_an_action_that_raises_is_a_500_the_test_sees(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    api.after("GET", ".*", lambda s: s.node("ghost"))
    error, body = failure(lambda: core.read_node("n1"))
    assert error.status == 500 and "KeyError" in body["message"]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}},
            422,
            'Node "n1" is invalid: spec.taints[0].effect: Unsupported value: "Sometimes": '
            'supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
        ),
        ({"spec": {"taints": [GPU_TAINT, GPU_TAINT]}}, 422, "taints must be unique by key and effect pair"),
        ({"spec": {"taints": [{"key": "", "value": "bad value"}]}}, 422, "spec.taints[0].effect: Required value"),
        ({"spec": {"taints": ["k=v:NoSchedule"]}}, 422, "must be a taint"),
        ({"spec": {"taints": "k"}}, 422, "must be a list of taints"),
        ({"metadata": {"labels": {"bad key": "v"}}}, 422, 'metadata.labels: Invalid value: "bad key": name part must'),
        ({"metadata": {"labels": {"k": "v" * 64}}}, 422, "must be no more than 63 characters"),
        ({"metadata": {"labels": {"k" * 64: "v"}}}, 422, "name part must be no more than 63 characters"),
        ({"metadata": {"labels": {"a" * 254 + "/k": "v"}}}, 422, "prefix part must be no more than 253 characters"),
        ({"metadata": {"labels": {"a/b/c": "v"}}}, 422, "a qualified name must consist of"),
        ({"metadata": {"labels": {"/b": "v"}}}, 422, "prefix part must be non-empty"),
        ({"metadata": {"labels": {"Bad_Prefix/b": "v"}}}, 422, "prefix part a lowercase RFC 1123 subdomain"),
        ({"metadata": {"labels": {"k": 5}}}, 422, "must be a string"),
        ({"metadata": {"labels": "k"}}, 422, "must be an object of strings"),
        ({"metadata": {"annotations": {"Big": "x" * 300_000}}}, 422, "must have at most 262144 bytes"),
        ({"metadata": {"uid": "another"}}, 422, 'metadata.uid: Invalid value: "another": field is immutable'),
        ({"metadata": {"name": "n2"}}, 400, "the name of the object (n2) does not match the name on the URL (n1)"),
        ({"spec": "unschedulable"}, 400, "does not decode as a Node"),
    ],
)
def test_a_write_the_server_would_not_store_changes_nothing(
    api: FakeApiServer, core: client.CoreV1Api, body: dict, code: int, message: str
):
    before = api.add_node("n1")
    error, status = failure(lambda: patch(core, body))
    assert error.status == code and message in status["message"]
    assert api.node("n1") == before


def test_what_no_write_can_change_is_kept(api: FakeApiServer, core: client.CoreV1Api):
    before = api.add_node("n1", created="2025-01-02T03:04:05Z")
    body = {"kind": "Pod", "metadata": {"creationTimestamp": "2000-01-01T00:00:00Z", "namespace": "x", "uid": None}}
    after = patch(core, {**body, "metadata": {**body["metadata"], "labels": {"a": "1"}}})
    assert after["kind"] == "Node" and "namespace" not in after["metadata"]
    assert after["metadata"]["creationTimestamp"] == "2025-01-02T03:04:05Z"
    assert after["metadata"]["uid"] == before["metadata"]["uid"]


def test_a_patch_that_is_not_an_object_is_400_and_a_node_is_never_put(api: FakeApiServer):
    """The harness patches nodes; it never replaces one (PUT), which the fake does not serve."""
    api.add_node("n1")
    assert raw(api, "PATCH", "/api/v1/nodes/n1", b"true", SMP)[1]["message"].startswith("json: cannot unmarshal bool")
    status, answer = raw(api, "PUT", "/api/v1/nodes/n1", json.dumps(api.node("n1")).encode())
    assert (status, answer["reason"]) == (405, "MethodNotAllowed")


def test_a_dry_run_answers_the_result_and_writes_nothing(api: FakeApiServer, core: client.CoreV1Api):
    before = api.add_node("n1")
    assert patch(core, {"metadata": {"labels": {"a": "1"}}}, dry_run="All")["metadata"]["labels"]["a"] == "1"
    assert api.node("n1") == before
    error, body = failure(lambda: patch(core, {"metadata": {}}, dry_run="Some"))
    assert error.status == 422 and body["message"].startswith('PatchOptions.meta.k8s.io "" is invalid: dryRun')
    created = core.create_namespaced_event("default", node_event("n1"), dry_run="All")
    assert created.metadata.uid and not created.metadata.resource_version and api.events == []


def test_concurrent_writers_are_serialised(api: FakeApiServer, tmp_path: Path):
    api.add_node("n1")

    def write(worker: int) -> None:
        with connected(api.kubeconfig(tmp_path / f"kubeconfig-{worker}")) as core:
            for i in range(10):
                patch(core, {"metadata": {"labels": {f"w{worker}-{i}": "1"}}})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    node = api.node("n1")
    assert len(labels(node)) == 80 and node["metadata"]["resourceVersion"] == "81"


# -- injected failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(500, "InternalError"), (503, "ServiceUnavailable"), (504, "Timeout")])
def test_injected_server_errors_answer_a_status_once(
    api: FakeApiServer, core: client.CoreV1Api, status: int, reason: str
):
    api.add_node("n1")
    api.fail("GET", "/api/v1/nodes/n1", status)
    error, body = failure(lambda: core.read_node("n1"))
    assert error.status == status and body["reason"] == reason and body["message"]
    assert core.read_node("n1").metadata.name == "n1", "times=1: the next request is served"


def test_a_429_carries_retry_after_for_the_client_to_honour(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    api.fail("*", r"/api/v1/nodes/.*", 429, times=2, headers={"Retry-After": "1"})
    api.after("PATCH", ".*", lambda s: pytest.fail("an injected failure serves nothing: no hooks"))
    for call in (lambda: core.read_node("n1"), lambda: patch(core, {"metadata": {}})):
        error, body = failure(call)
        assert error.status == 429 and error.headers["Retry-After"] == "1"
        assert body["reason"] == "TooManyRequests" and body["details"] == {"retryAfterSeconds": 1}
    assert [r.status for r in api.requests] == [429, 429]
    api.fail("GET", "/api/v1/nodes/n1", 418, message="I'm a teapot")
    error, body = failure(lambda: core.read_node("n1"))
    assert body["message"] == "I'm a teapot" and "reason" not in body


def test_a_delayed_failure_outlasts_the_client_timeout_and_stop_does_not_wait_for_it(
    api: FakeApiServer, core: client.CoreV1Api
):
    api.add_node("n1")
    api.fail("PATCH", "/api/v1/nodes/n1", 503, delay=30.0)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        patch(core, {"metadata": {}}, _request_timeout=0.2)
    began = time.monotonic()
    api.stop()
    assert time.monotonic() - began < 2


# -- events -----------------------------------------------------------------------------------------------


def node_event(node: str, **extra: Any) -> client.CoreV1Event:
    """An Event about a Node, as the harness builds one: through the client's model."""
    body = {
        "metadata": {"name": f"{node}.17a2b3c4d5e6f708", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node},
        "type": "Warning",
        "reason": "GPUBurnInFailed",
        "message": "GPU 3 hung",
        "source": {"component": "gpu-burnin", "host": node},
        "count": 1,
    }
    return client.CoreV1Event.from_dict(body | extra)


def test_events_are_created_and_listed_back(api: FakeApiServer, core: client.CoreV1Api):
    created = core.create_namespaced_event("default", node_event("n1"))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    generated = core.create_namespaced_event("default", node_event("n2", metadata={"generateName": "n2."}))
    assert re.fullmatch(r"n2\.[bcdfghjklmnpqrstvwxz2456789]{5}", generated.metadata.name)
    pod = {"kind": "Pod", "name": "p", "namespace": "kube-system"}
    core.create_namespaced_event("kube-system", node_event("n3", metadata={"name": "n3.1"}, involvedObject=pod))
    assert [e["metadata"]["name"] for e in api.events] == [created.metadata.name, generated.metadata.name, "n3.1"]
    assert api.events[0]["reason"] == "GPUBurnInFailed" and api.events[0]["metadata"]["namespace"] == "default"

    listed = json.loads(core.list_namespaced_event("default", _preload_content=False).data)
    assert listed["kind"] == "EventList" and len(listed["items"]) == 2
    assert core.read_namespaced_event(created.metadata.name, "default").message == "GPU 3 hung"
    error, body = failure(lambda: core.read_namespaced_event("n2.absent", "default"))
    assert error.status == 404 and body["message"] == 'events "n2.absent" not found'
    assert len(core.list_event_for_all_namespaces().items) == 3
    for selector, count in (
        ("involvedObject.name=n2", 1),
        ("involvedObject.kind=Node,type=Warning", 2),
        ("source=x", 0),
    ):
        assert len(core.list_namespaced_event("default", field_selector=selector).items) == count


def test_an_event_whose_name_is_taken_is_409_already_exists(api: FakeApiServer, core: client.CoreV1Api):
    core.create_namespaced_event("default", node_event("n1"))
    error, body = failure(lambda: core.create_namespaced_event("default", node_event("n1")))
    assert error.status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'events "n1.17a2b3c4d5e6f708" already exists' and len(api.events) == 1


@pytest.mark.parametrize(
    ("namespace", "extra", "code", "message"),
    [
        ("gpu-burnin", {}, 400, "does not match the namespace sent on the request"),
        (
            "nowhere",
            {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "nowhere"}},
            404,
            'namespaces "nowhere" not found',
        ),
        ("gpu-burnin", {"metadata": {"name": "e"}}, 422, "involvedObject.namespace: Invalid value"),
        ("default", {"metadata": {}}, 422, "metadata.name: Required value: name or generateName is required"),
        ("default", {"metadata": {"name": "a/b"}}, 422, "may not contain '/'"),
        ("default", {"metadata": {"name": ".."}}, 422, "may not be '..'"),
        ("default", {"eventTime": "2025-01-02T03:04:05.000000Z"}, 422, "reportingController: Required value"),
        (
            "default",
            {"eventTime": "2025-01-02T03:04:05.000000Z", "reportingComponent": "bad component!", "action": "x" * 129},
            422,
            "action: Invalid value",
        ),
        (
            "default",
            {"eventTime": "2025-01-02T03:04:05.000000Z", "reportingComponent": "c", "message": "m" * 1025},
            422,
            "message: Invalid value",
        ),
    ],
)
def test_an_event_the_server_would_not_store_is_refused(
    api: FakeApiServer, core: client.CoreV1Api, namespace: str, extra: dict, code: int, message: str
):
    error, body = failure(lambda: core.create_namespaced_event(namespace, node_event("n1", **extra)))
    assert error.status == code and message in body["message"] and api.events == []


def test_a_new_style_event_is_stored(api: FakeApiServer, core: client.CoreV1Api):
    extra = {"eventTime": "2025-01-02T03:04:05.000000Z", "reportingComponent": "gpu-burnin", "action": "BurnIn"}
    created = core.create_namespaced_event("default", node_event("n1", reportingInstance="n1", **extra))
    assert created.action == "BurnIn"


def test_an_event_body_that_is_not_an_event_is_refused(api: FakeApiServer):
    path = "/api/v1/namespaces/default/events"
    assert raw(api, "POST", path, b'{"kind": "Node", "metadata": {"name": "x"}}')[0] == 400
    assert raw(api, "POST", path, b"[]")[0] == 400
    assert raw(api, "POST", path, b"{}", "application/yaml")[0] == 415


# -- the request log and the server's lifecycle -----------------------------------------------------------------


def test_the_request_log_says_what_the_client_sent_and_what_it_got(api: FakeApiServer, core: client.CoreV1Api):
    api.add_node("n1")
    core.list_node(label_selector="gpu in (a,b)")
    patch(core, {"metadata": {"labels": {"a": "1"}}})
    listed, patched = api.requests
    assert (listed.method, listed.path, listed.query, listed.body, listed.status) == (
        "GET",
        "/api/v1/nodes",
        {"labelSelector": "gpu in (a,b)"},
        None,
        200,
    )
    assert (patched.method, patched.content_type, patched.body) == ("PATCH", SMP, {"metadata": {"labels": {"a": "1"}}})
    patched.body["metadata"] = {}
    assert api.requests[1].body == {"metadata": {"labels": {"a": "1"}}}, "requests are copies"


def test_stop_closes_kept_alive_connections_and_leaves_no_thread(tmp_path: Path):
    before = set(threading.enumerate())
    server = FakeApiServer().start()
    server.add_node("n1")
    with connected(server.kubeconfig(tmp_path)) as core:
        core.read_node("n1")  # urllib3 keeps this connection open, and a handler thread waiting on it
        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 1
    assert set(threading.enumerate()) == before
    server.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="not running"):
        server.kubeconfig(tmp_path)
    with FakeApiServer() as restarted:
        with pytest.raises(RuntimeError, match="already running"):
            restarted.start()


def test_a_connection_accepted_while_stopping_is_closed_unanswered():
    server = FakeApiServer().start()
    server._stopping.set()  # what stop() does first; a connection accepted now must not hold a thread open
    with socket.create_connection(("127.0.0.1", int(server.url.rpartition(":")[2]))) as connection:
        connection.sendall(b"GET /api/v1/nodes HTTP/1.1\r\nHost: fake\r\n\r\n")
        assert connection.recv(1024) == b""
    server.stop()
    assert server.requests == []
