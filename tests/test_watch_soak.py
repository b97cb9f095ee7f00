"""The soak test: a fleet of simulated nodes watched for eight hours of virtual time against the fake
API server, with the remediator serving the watches' requests. Quiet hours, a burst of Xids on one
GPU, a flapping counter, a GPU lost with its job behind a disruption budget, two watch restarts in
the middle of an action and a remediator restart in the middle of a drain: the expected actions
happen exactly once, and nothing else is written."""

from __future__ import annotations

import pytest

from harness.kube import node as nodes
from tests.kube_fake import FakeApiServer
from tests.remediator_replica import Replica
from tests.watch_fleet import DATA, Nodes, events

HOUR = 3600.0
QUIET = ["quiet-1", "quiet-2", "quiet-3"]


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        yield fake


def requests(server: FakeApiServer, name: str) -> list[tuple[str, str, int]]:
    """Every request about one node: its reads and writes, and Events naming it."""
    found = []
    for r in server.requests:
        about_node = r.path.startswith(f"/api/v1/nodes/{name}")
        about_event = r.path.endswith("/events") and (r.body or {}).get("involvedObject", {}).get("name") == name
        if about_node or about_event:
            found.append((r.method, r.path.replace(f"/api/v1/nodes/{name}", "NODE"), r.status))
    return found


def conditions(server: FakeApiServer, name: str) -> list[tuple[str, str]]:
    """The watch condition's (status, reason) as written, each change once (heartbeats folded)."""
    found: list[tuple[str, str]] = []
    for r in server.requests:
        if r.method == "PATCH" and r.path == f"/api/v1/nodes/{name}/status" and r.status == 200:
            (cond,) = r.body["status"]["conditions"]
            if cond["type"] == nodes.WATCH_CONDITION and (not found or found[-1] != (cond["status"], cond["reason"])):
                found.append((cond["status"], cond["reason"]))
    return found


def written_on_change_only(server: FakeApiServer, name: str) -> bool:
    """The watch's condition is written only when what it says changes: never twice the same in a row."""
    last = None
    for r in server.requests:
        if r.method == "PATCH" and r.path == f"/api/v1/nodes/{name}/status" and r.status == 200:
            (cond,) = r.body["status"]["conditions"]
            if cond["type"] != nodes.WATCH_CONDITION:
                continue
            content = (cond["status"], cond["reason"], cond["message"])
            if content == last:
                return False
            last = content
    return True


def test_eight_hours_of_a_fleet(server, tmp_path):
    fleet = Nodes(server, tmp_path, bystanders=3)
    remediator = Replica(server, tmp_path, clock=fleet.clock, max_share=0.34)  # 9 GPU nodes: 3 may be out

    def run(seconds: float) -> None:
        """The watches poll, and the remediator makes a pass, every 30 s."""
        for _ in range(round(seconds / 30)):
            fleet.run(30)
            remediator.step()

    for name in QUIET:
        fleet.add(name, DATA / "busy.toml")
    fleet.add("xid", DATA / "soak-xid.toml")
    fleet.add("flap", DATA / "soak-flap.toml")
    fleet.add("lost", DATA / "soak-lost.toml")
    server.add_pod("ml", "train-7", node="lost", gpus=8, owner="ReplicaSet")
    server.add_pod("ml", "serve-2", node="lost", owner="ReplicaSet")  # no GPU: stays
    server.add_pod("gpu-operator", "dcgm-exporter-lost", node="lost", gpus=8, owner="DaemonSet")  # stays
    server.protect("ml", "train-7")

    run(3 * HOUR - 30)  # quiet hours; from 2h the flapping counter
    # 3h: the Xid burst. The condition and the request land, then every Event fails: the watch dies mid-action.
    events_path = "/api/v1/namespaces/gpu-burnin/events"
    server.after("PATCH", "/api/v1/nodes/xid", lambda s: s.fail("POST", events_path, 503, times=100))
    fleet.run(60)
    assert server.node("xid")["metadata"]["labels"]["gpu-burnin/health"] == "failing" and events(server, "xid") == []
    server.heal()
    fleet.restart("xid")
    run(2 * HOUR - 60)  # to 5h: GPU 1 of "lost" falls off the bus; its job's budget refuses eviction
    run(10 * 60)
    assert server.node("lost")["spec"]["unschedulable"] is True
    assert not [p for p in server.pods if p["metadata"].get("deletionTimestamp")]
    fleet.restart("lost")  # the watch restarted while the drain waits...
    remediator = Replica(server, tmp_path, clock=fleet.clock, max_share=0.34)  # ...and the remediator too
    run(20 * 60)
    server.unprotect("ml", "train-7")  # 5h30m: the job's other replicas are back; the budget allows it
    run(30 * 60)
    server.finish_deletions()  # the kubelet finished the evicted pod
    run(2 * HOUR)  # to 8h

    # Quiet nodes, and the flapping one: one read and the condition at start, then nothing for 8 hours.
    for name in [*QUIET, "flap"]:
        assert requests(server, name) == [("GET", "NODE", 200), ("PATCH", "NODE/status", 200)], name
        assert conditions(server, name) == [("True", "NoFindings")]
        assert events(server, name) == []

    # The Xid burst (Xid 48: critical): asked once, its Event once (after the restart finished the request);
    # taken out once, drained at once (no GPU pod on it); cleared an hour after the last Xid: the watch's
    # condition goes back, the take-out stays.
    xid = [r for r in requests(server, "xid") if r[0] != "GET"]
    assert [r for r in xid if r[1] == "NODE"] == [("PATCH", "NODE", 200)] * 2  # the watch's request, the take-out
    assert {r for r in xid if r[2] >= 300} == {("POST", events_path, 503)}  # the injected
    assert events(server, "xid") == [
        ("xid", "GPUBurnInFailing"),
        ("xid", "GPUBurnInTakenOut"),
        ("xid", "GPUBurnInDrained"),
        ("xid", "GPUBurnInWatchCleared"),
    ]
    # ("False", "XID") from before the request to its clearing: the restart carried the open request on.
    assert conditions(server, "xid") == [("True", "NoFindings"), ("False", "XID"), ("True", "NoFindings")]
    assert server.node("xid")["spec"]["unschedulable"] is True

    # The GPU lost: asked once, taken out once, its GPU job evicted once the budget allowed, nothing else touched.
    lost = [r for r in requests(server, "lost") if r[0] != "GET"]
    assert [r for r in lost if r[1] == "NODE"] == [("PATCH", "NODE", 200)] * 2
    assert events(server, "lost") == [
        ("lost", "GPUBurnInFailing"),
        ("lost", "GPUBurnInTakenOut"),
        ("lost", "GPUBurnInDrainBlocked"),
        ("lost", "GPUBurnInEvicted"),
        ("lost", "GPUBurnInDrained"),
    ]
    assert conditions(server, "lost") == [("True", "NoFindings"), ("False", "GPU_MISSING")]
    evictions = [(r.path.split("/")[6], r.status) for r in server.requests if r.path.endswith("/eviction")]
    assert {e for e in evictions if e[1] != 429} == {("train-7", 201)} and evictions.count(("train-7", 201)) == 1
    assert len(evictions) < 20  # the refusals were retried with back-off, not at every pass
    assert sorted(p["metadata"]["name"] for p in server.pods if p["metadata"]["namespace"] == "ml") == ["serve-2"]

    # The fleet as a whole: no node but these was written to, and no condition written unchanged.
    assert all(written_on_change_only(server, name) for name in [*QUIET, "flap", "xid", "lost"])
    touched = {
        r.path.split("/")[4] for r in server.requests if r.method == "PATCH" and r.path.startswith("/api/v1/nodes/")
    }
    assert touched == {*QUIET, "flap", "xid", "lost"}
    bystanders = [r for r in server.requests if r.path.startswith("/api/v1/nodes/other-")]
    assert bystanders == []
