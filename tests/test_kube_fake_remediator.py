"""The fake API server's parts the remediator and the per-component identities rely on, through the real
`kubernetes` client: metadata-only lists and watches, the node Table, leases, pod deletion, tokens with
their own users, node claims and RBAC rights, and the admission hook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.kube_fake import FakeApiServer
from tests.kube_fake_parts import rights

GPU = "nvidia.com/gpu.present=true"
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
META = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/gpu-burnin/leases"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_s=0.05) as fake:
        for i in range(3):
            fake.add_node(f"g{i}", labels={"nvidia.com/gpu.present": "true"})
        fake.add_node("cpu", labels={"team": "web"})
        yield fake


def core_for(server: FakeApiServer, path: Path, token: str | None = None) -> client.CoreV1Api:
    configuration = client.Configuration()
    configuration.retries = False
    made = config.new_client_from_config(
        config_file=str(server.kubeconfig(path, token=token)), client_configuration=configuration
    )
    return client.CoreV1Api(made)


@pytest.fixture
def core(server: FakeApiServer, tmp_path: Path) -> client.CoreV1Api:
    return core_for(server, tmp_path / "k")


def raw(core: client.CoreV1Api, method: str, path: str, body: Any = None, accept: str = "application/json") -> Any:
    api = core.api_client
    headers = {"Accept": accept, **({"Content-Type": "application/json"} if body is not None else {})}
    request = api.param_serialize(method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
    response = api.call_api(*request)
    response.read()
    return response.status, json.loads(response.data or b"null")


def failure(call: Any) -> tuple[ApiException, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value, json.loads(caught.value.body)


# -- what a list is answered as ------------------------------------------------------------------------------


def test_a_metadata_list_holds_each_selected_nodes_metadata_and_nothing_else(core: client.CoreV1Api):
    response = core.list_node(
        label_selector=GPU, resource_version="0", _headers={"Accept": META_LIST}, _preload_content=False
    )
    body = json.loads(response.data)
    assert (body["kind"], body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert [i["metadata"]["name"] for i in body["items"]] == ["g0", "g1", "g2"]
    assert {tuple(sorted(i)) for i in body["items"]} == {("apiVersion", "kind", "metadata")}
    assert body["items"][0]["kind"] == "PartialObjectMetadata" and body["metadata"]["resourceVersion"]


def test_the_table_says_ready_and_cordoned_in_its_status_column(server: FakeApiServer, core: client.CoreV1Api):
    server.edit_node("g1", lambda n: n["spec"].update(unschedulable=True))

    def not_ready(node: dict[str, Any]) -> None:
        next(c for c in node["status"]["conditions"] if c["type"] == "Ready").update(status="Unknown")

    server.edit_node("g2", not_ready)
    response = core.list_node(label_selector=GPU, _headers={"Accept": TABLE}, _preload_content=False)
    table = json.loads(response.data)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Status", "Roles", "Age", "Version"]
    assert [row["cells"][:3] for row in table["rows"]] == [
        ["g0", "Ready", "<none>"],
        ["g1", "Ready,SchedulingDisabled", "<none>"],
        ["g2", "NotReady", "<none>"],
    ]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"  # includeObject=Metadata by default


def test_a_media_type_the_server_cannot_give_is_406(core: client.CoreV1Api):
    error, body = failure(
        lambda: core.list_node(
            _headers={"Accept": "application/json;as=Pod;g=meta.k8s.io;v=v1"}, _preload_content=False
        )
    )
    assert error.status == 406 and body["reason"] == "NotAcceptable"
    answer = core.list_node(_headers={"Accept": f"{META};q=1, application/json"}, _preload_content=False)
    assert json.loads(answer.data)["kind"] == "NodeList"  # a list is not one PartialObjectMetadata: the next one


# -- watches ---------------------------------------------------------------------------------------------


def watch(core: client.CoreV1Api, **given: Any) -> Iterator[dict[str, Any]]:
    response = core.list_node(watch=True, _headers={"Accept": META}, _preload_content=False, **given)
    buffer = b""
    for chunk in response.stream(1024):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield json.loads(line)


def later(action: Any, delay: float = 0.2) -> None:
    threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True).start()


def test_a_watch_sends_each_change_as_the_selection_sees_it(server: FakeApiServer, core: client.CoreV1Api):
    start = json.loads(core.list_node(label_selector=GPU, _preload_content=False).data)["metadata"]["resourceVersion"]

    def changes() -> None:
        server.edit_node("g0", lambda n: n["metadata"]["labels"].update({"gpu-burnin/health": "failing"}))
        server.edit_node("g1", lambda n: n["metadata"]["labels"].pop("nvidia.com/gpu.present"))  # leaves
        server.edit_node("cpu", lambda n: n["metadata"]["labels"].update({"nvidia.com/gpu.present": "true"}))  # joins
        server.edit_node("cpu", lambda n: n["metadata"]["labels"].update({"team": "ml"}))
        server.remove_node("g2")

    later(changes)
    seen = [
        (e["type"], e["object"]["metadata"].get("name"))
        for e in watch(core, label_selector=GPU, resource_version=start, timeout_seconds=1)
        if e["type"] != "BOOKMARK"
    ]
    assert seen == [("MODIFIED", "g0"), ("DELETED", "g1"), ("ADDED", "cpu"), ("MODIFIED", "cpu"), ("DELETED", "g2")]


def test_a_watch_from_nothing_begins_with_every_selected_node(core: client.CoreV1Api):
    first = [(e["type"], e["object"]["metadata"]["name"]) for e in watch(core, label_selector=GPU, timeout_seconds=1)]
    assert first == [("ADDED", "g0"), ("ADDED", "g1"), ("ADDED", "g2")]


def test_bookmarks_carry_the_version_on_a_quiet_selection(server: FakeApiServer, core: client.CoreV1Api):
    start = json.loads(core.list_node(label_selector=GPU, _preload_content=False).data)["metadata"]["resourceVersion"]
    later(lambda: server.edit_node("cpu", lambda n: n["metadata"]["labels"].update({"team": "ml"})))
    events = list(
        watch(core, label_selector=GPU, resource_version=start, allow_watch_bookmarks=True, timeout_seconds=1)
    )
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert [e["type"] for e in events] == ["BOOKMARK"] * len(events) and marks
    assert int(marks[-1]["object"]["metadata"]["resourceVersion"]) > int(start)
    assert marks[-1]["object"]["kind"] == "PartialObjectMetadata"


def test_a_watch_from_a_compacted_version_ends_with_410(server: FakeApiServer, core: client.CoreV1Api):
    start = json.loads(core.list_node(_preload_content=False).data)["metadata"]["resourceVersion"]
    server.edit_node("g0", lambda n: n["metadata"]["labels"].update({"a": "b"}))
    server.compact()
    (event,) = list(watch(core, resource_version=start, timeout_seconds=1))
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


# -- leases ----------------------------------------------------------------------------------------------


def lease(holder: str, version: str = "", renew: str = "2026-11-28T12:00:00.000000Z") -> dict[str, Any]:
    metadata = {"name": "l", **({"resourceVersion": version} if version else {})}
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "acquireTime": renew}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def test_a_lease_is_created_once_and_updated_only_from_the_version_read(core: client.CoreV1Api):
    assert raw(core, "GET", f"{LEASES}/l")[0] == 404
    status, made = raw(core, "POST", LEASES, lease("a"))
    assert status == 201 and made["spec"]["holderIdentity"] == "a"
    assert raw(core, "POST", LEASES, lease("b"))[1]["reason"] == "AlreadyExists"
    version = made["metadata"]["resourceVersion"]
    status, updated = raw(core, "PUT", f"{LEASES}/l", lease("a", version))
    assert status == 200 and updated["metadata"]["resourceVersion"] != version
    status, stale = raw(core, "PUT", f"{LEASES}/l", lease("b", version))  # a racing replica's stale read
    assert (status, stale["reason"]) == (409, "Conflict") and "leases.coordination.k8s.io" in stale["message"]
    status, blind = raw(core, "PUT", f"{LEASES}/l", lease("b"))
    assert (status, blind["reason"]) == (422, "Invalid") and "must be specified for an update" in blind["message"]


def test_a_micro_time_without_its_microseconds_does_not_decode(core: client.CoreV1Api):
    status, body = raw(core, "POST", LEASES, lease("a", renew="2026-11-28T12:00:00+00:00"))
    assert status == 400 and 'cannot parse as ".000000"' in body["message"]
    status, body = raw(core, "POST", LEASES, {**lease("a"), "spec": {"leaseDurationSeconds": 0}})
    assert status == 422 and "spec.leaseDurationSeconds" in body["message"]


# -- who asks ----------------------------------------------------------------------------------------------


def test_each_token_is_its_own_user_with_its_own_rights(server: FakeApiServer, tmp_path: Path):
    server.identity("w", "system:serviceaccount:gpu-ops:watch", node="g0", rights=rights("get,patch nodes"))
    agent = core_for(server, tmp_path / "w", token="w")
    assert agent.read_node("g0").metadata.name == "g0"
    error, body = failure(lambda: agent.list_node())
    assert error.status == 403 and body["message"] == (
        'nodes is forbidden: User "system:serviceaccount:gpu-ops:watch" cannot list resource "nodes" '
        'in API group "" at the cluster scope'
    )
    error, _ = failure(
        lambda: agent.create_namespaced_pod_eviction(
            "x", "ml", client.V1Eviction(metadata=client.V1ObjectMeta(name="x"))
        )
    )
    assert error.status == 403
    server.revoke("w")
    assert failure(lambda: agent.read_node("g0"))[0].status == 401


def test_the_admission_hook_sees_who_and_what_and_its_denial_is_a_422(server: FakeApiServer, tmp_path: Path):
    seen: list[tuple[Any, ...]] = []

    def admit(who: dict[str, Any], old: Any, new: dict[str, Any], resource: str, sub: str) -> str | None:
        seen.append((who["username"], who["extra"], resource, sub, (old or {}).get("metadata", {}).get("name")))
        return "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no" if resource == "events" else None

    server.admission = admit
    server.identity("w", "system:serviceaccount:gpu-burnin:watch", node="g0")
    agent = core_for(server, tmp_path / "w", token="w")
    agent.patch_node_status("g0", {"status": {"conditions": [{"type": "X", "status": "True"}]}})
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="e1", namespace="gpu-burnin"),
        involved_object=client.V1ObjectReference(kind="Node", name="g0", namespace="gpu-burnin"),
    )
    error, body = failure(lambda: agent.create_namespaced_event("gpu-burnin", event))
    assert (error.status, body["reason"]) == (422, "Invalid")
    assert (
        body["message"]
        == "events \"e1\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no"
    )
    claim = {"authentication.kubernetes.io/node-name": ["g0"]}
    assert seen == [
        ("system:serviceaccount:gpu-burnin:watch", claim, "nodes", "status", "g0"),
        ("system:serviceaccount:gpu-burnin:watch", claim, "events", "", None),
    ]
    assert server.events == []


def test_a_pod_is_deleted_gracefully(server: FakeApiServer, core: client.CoreV1Api):
    server.add_pod("ml", "p", node="g0", gpus=1)
    core.delete_namespaced_pod("p", "ml")
    (pod,) = server.pods
    assert pod["metadata"]["deletionTimestamp"] and pod["metadata"]["deletionGracePeriodSeconds"] == 30
    server.finish_deletions()
    assert failure(lambda: core.delete_namespaced_pod("p", "ml"))[0].status == 404
