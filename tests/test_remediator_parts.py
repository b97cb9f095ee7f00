"""The remediator's parts one by one: the brake's arithmetic and order, the Lease as client-go keeps it, the
view's watch events, reading a large answer a piece at a time, which failures are critical, the patches a
node agent and the remediator compute, and the whole process with its threads against the fake."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import urllib.request

import pytest

from harness import severity
from harness.kube import node as nodes
from harness.kube import stream
from harness.kube.api import Patience, connect
from harness.records import Code, Finding, Remediation, Severity
from harness.remediator import brake, leader
from harness.remediator.brake import Seen
from harness.remediator.command import Process
from harness.remediator.config import Config
from harness.remediator.leader import Timing
from tests import contract_policy
from tests.kube_fake import FakeApiServer
from tests.watch_fleet import Clock

MARKS = nodes.Marks()
T0 = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


@pytest.fixture
def server():
    with FakeApiServer(bookmark_s=0.05) as fake:
        yield fake


# -- the brake ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_service", "share", "most", "allowed"),
    [
        (10, 0.05, 50, 1),  # half a node: always at least one
        (19, 0.05, 50, 1),
        (20, 0.05, 50, 1),
        (40, 0.05, 50, 2),
        (100, 0.29, 50, 29),  # 0.29 * 100 is 28.999999999999996 in floating point
        (12_500, 0.05, 50, 50),  # the absolute limit
        (12_500, 0.0, 50, 1),
        (0, 0.05, 50, 1),
    ],
)
def test_the_limit_is_the_share_and_the_count_and_never_below_one(in_service, share, most, allowed):
    assert brake.limit(in_service, share, most) == allowed


def seen(name, health="", minutes=None, **given):
    requested = T0 + dt.timedelta(minutes=minutes) if minutes is not None else None
    return Seen(name=name, health=health, requested=requested, **given)


def test_requests_are_served_oldest_first_and_those_without_a_time_last():
    fleet = [seen(f"ok{i}") for i in range(36)] + [
        seen("late", "failing", minutes=30),
        seen("early", "failing", minutes=5),
        seen("untimed", "failing"),
        seen("middle", "failing", minutes=10),
    ]
    plan = brake.plan(fleet, max_share=0.05, max_nodes=50, unhealthy="unhealthy")  # 40 in service: 2 may go
    assert [n.name for n in plan.take] == ["early", "middle"]
    assert [n.name for n in plan.braked] == ["late", "untimed"]
    assert (plan.limit, plan.out, plan.out_after, plan.held) == (2, 0, 2, True)


def test_what_is_out_already_or_not_yet_in_service_is_taken_out_at_no_cost():
    fleet = [seen(f"ok{i}") for i in range(16)] + [
        seen("ours", "unhealthy"),
        seen("admin", "failing", minutes=9, unschedulable=True),
        seen("down", ready=False),
        seen("joining", "failing", minutes=1, preflight=True),  # its watch asks while it is in preflight
        seen("new", "failing", minutes=2),
    ]
    plan = brake.plan(fleet, max_share=0.05, max_nodes=50, unhealthy="unhealthy")
    assert plan.in_service == 20 and plan.out == 3  # ours, admin's cordon, NotReady; preflight not counted
    assert [n.name for n in plan.take] == ["joining", "admin"] and [n.name for n in plan.braked] == ["new"]


# -- the Lease ---------------------------------------------------------------------------------------------------


def electors(server, tmp_path, *names, clock=None):
    clock = clock or Clock()
    config = server.kubeconfig(tmp_path / "k")
    api = connect(config, patience=Patience(total_s=0.3, first_backoff_s=0.01))
    return clock, [leader.Elector(api, "l", name, Timing(), clock=clock, wall=clock.wall) for name in names]


def spec(server):
    return server.lease("gpu-burnin", "l")["spec"]


def test_the_holder_renews_and_keeps_when_it_took_the_lease(server, tmp_path):
    clock, (a,) = electors(server, tmp_path, "a")
    assert a.tick() and spec(server)["leaseTransitions"] == 0
    taken = spec(server)["acquireTime"]
    clock.t += 2
    assert a.tick()
    assert spec(server)["acquireTime"] == taken and spec(server)["renewTime"] == "2026-11-28T00:00:02.000000Z"
    assert spec(server)["leaseTransitions"] == 0


def test_a_candidate_takes_the_lease_only_a_whole_lease_duration_after_it_last_saw_it_change(server, tmp_path):
    clock, (a, b) = electors(server, tmp_path, "a", "b")
    assert a.tick()
    clock.t += 1
    assert not b.tick()  # b first sees the record now: its 15 s run from here, on b's own clock
    clock.t += 14
    assert not b.tick()
    clock.t += 1.5
    assert b.tick() and (spec(server)["holderIdentity"], spec(server)["leaseTransitions"]) == ("b", 1)
    assert not a.leading()  # and a, which stopped renewing 16.5 s ago, stopped acting at 10 s


def test_a_renewal_seen_resets_the_candidates_wait(server, tmp_path):
    clock, (a, b) = electors(server, tmp_path, "a", "b")
    a.tick()
    b.tick()
    for _ in range(10):  # a renews every 2 s for 20 s: b never sees the record stand still for 15 s
        clock.t += 2
        assert a.tick() and not b.tick()


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win(server, tmp_path):
    clock, (a, b, c) = electors(server, tmp_path, "a", "b", "c")
    a.tick()
    b.tick()
    c.tick()
    clock.t += 16
    server.before("PUT", "/apis/coordination.k8s.io/v1/namespaces/gpu-burnin/leases/l", lambda s: None)
    # b and c both read the expired record; b writes first, so c's write carries a stale resourceVersion.
    won_b = b.tick()
    c._lease = dict(b._lease or {}, metadata={**(b._lease or {})["metadata"], "resourceVersion": "1"})
    won_c = c.tick()
    assert won_b and not won_c and spec(server)["holderIdentity"] == "b"


def test_a_released_lease_is_taken_at_once(server, tmp_path):
    clock, (a, b) = electors(server, tmp_path, "a", "b")
    a.tick()
    b.tick()
    a.release()
    assert "holderIdentity" not in spec(server) and spec(server)["leaseDurationSeconds"] == 1
    assert b.tick() and spec(server)["holderIdentity"] == "b"


# -- the view ----------------------------------------------------------------------------------------------------


def test_watch_events_keep_the_view_and_its_columns(server, tmp_path):
    server.add_node("g0", labels={"nvidia.com/gpu.present": "true"}, unschedulable=True)
    process = Process(connect(server.kubeconfig(tmp_path / "k")), Config(identity="x", metrics_port=0))
    view = process.view
    view.relist()
    view.refresh_columns()
    assert view.nodes["g0"].unschedulable
    requested = json.dumps({"time": "2026-11-28T01:00:00Z"})
    metadata = {
        "name": "g0",
        "resourceVersion": "90",
        "labels": {"gpu-burnin/health": "failing", "gpu-burnin/severity": "critical"},
        "annotations": {nodes.REQUESTED: requested},
    }
    view.apply("MODIFIED", {"metadata": metadata})
    g0 = view.nodes["g0"]
    assert (g0.health, g0.severity, g0.requested, g0.unschedulable) == (
        "failing",
        "critical",
        T0 + dt.timedelta(hours=1),
        True,  # a metadata event says nothing of the cordon: the last column read stands
    )
    view.apply("BOOKMARK", {"metadata": {"resourceVersion": "95"}})
    view.apply("DELETED", {"metadata": {**metadata, "resourceVersion": "96"}})
    assert view.nodes == {} and view.version == "96"


# -- a large answer, a piece at a time ----------------------------------------------------------------------------


def test_a_list_read_a_byte_at_a_time_is_the_list():
    body = {"kind": "L", "metadata": {"resourceVersion": "7"}, "items": [{"a": [1, 2.5e3, "é"]}, {}, {"b": None}]}
    raw = json.dumps(body, ensure_ascii=False).encode()
    found = list(stream.members((raw[i : i + 1] for i in range(len(raw))), "items"))
    assert found == [
        ("kind", "L"),
        ("metadata", {"resourceVersion": "7"}),
        ("items", {"a": [1, 2500.0, "é"]}),
        ("items", {}),
        ("items", {"b": None}),
    ]
    assert list(stream.members([b'{"items": []}'], "items")) == []
    assert list(stream.members([b'{"n": 1', b"23}"], "items")) == [("n", 123)]


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"items": [1,', b'{"items": [1 2]}', b'{"a" 1}'])
def test_a_broken_answer_is_said_as_such(raw):
    with pytest.raises(stream.Malformed):
        list(stream.members([raw], "items"))


def test_watch_lines_come_whole_whatever_the_chunks():
    text = b'{"type":"ADDED","object":{}}\n{"type":"BOOKMARK","object":{}}\n'
    assert [e["type"] for e in stream.lines([text[:7], text[7:40], text[40:]])] == ["ADDED", "BOOKMARK"]


# -- critical, and the patches ----------------------------------------------------------------------------------


def finding(code, remediation=Remediation.REPLACE_GPU, level=Severity.FAIL, **details):
    return Finding(code=code, severity=level, gpu="G", message="m", remediation=remediation, details=details)


@pytest.mark.parametrize(
    ("given", "critical"),
    [
        (finding(Code.DATA_MISMATCH), True),
        (finding(Code.ECC_UNCORRECTABLE, Remediation.RESET_GPU), True),
        (finding(Code.ECC_UNCORRECTABLE, level=Severity.WARNING), False),  # ECC switched off
        (finding(Code.ROW_REMAP_FAILURE), True),
        (finding(Code.GPU_MISSING), True),
        (finding(Code.XID, Remediation.REBOOT_NODE, xid=79), True),
        (finding(Code.XID, Remediation.RESET_GPU, xid=48), True),
        (finding(Code.XID, Remediation.CHECK_CONFIG, xid=143), False),
        (finding(Code.XID, Remediation.RESTART_APP, level=Severity.WARNING, xid=13), False),
        (finding(Code.ROW_REMAP_PENDING, Remediation.RESET_GPU), False),
        (finding(Code.LOW_THROUGHPUT, Remediation.INSPECT_HARDWARE), False),
        (finding(Code.HANG, Remediation.RESET_GPU), False),
    ],
)
def test_which_failures_are_critical(given, critical):
    assert severity.critical(given) is critical


def a_node(labels=None, annotations=None, unschedulable=False):
    metadata = {"name": "n1", "resourceVersion": "5", "labels": labels or {}, "annotations": annotations or {}}
    return {"metadata": metadata, "spec": {"unschedulable": True} if unschedulable else {}}


REQUESTED = {"by": "gpu-burnin watch", "reason": "r", "codes": ["XID"], "time": "2026-11-28T00:00:00Z"}


def test_a_request_sets_failing_only_where_there_is_no_health_mark_and_only_raises_the_severity():
    first = nodes.request_patch(a_node(), MARKS, critical=False, requested=REQUESTED)
    assert first["metadata"]["labels"] == {"gpu-burnin/health": "failing", "gpu-burnin/severity": "fail"}
    assert json.loads(first["metadata"]["annotations"][nodes.REQUESTED]) == REQUESTED and "spec" not in first
    asked = a_node({"gpu-burnin/health": "failing", "gpu-burnin/severity": "fail"})
    raised = nodes.request_patch(asked, MARKS, critical=True, requested=REQUESTED)
    assert raised["metadata"] == {"resourceVersion": "5", "labels": {"gpu-burnin/severity": "critical"}}
    out = a_node({"gpu-burnin/health": "unhealthy", "gpu-burnin/severity": "critical"})
    assert nodes.request_patch(out, MARKS, critical=False, requested=REQUESTED) == {
        "metadata": {"resourceVersion": "5"}
    }


def test_a_take_out_records_whether_the_node_was_cordoned_already():
    asked = a_node({"gpu-burnin/health": "failing"})
    body = nodes.take_out_patch(asked, MARKS, T0)
    assert body is not None and body["spec"] == {
        "taints": [{"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}],
        "unschedulable": True,
    }
    record = json.loads(body["metadata"]["annotations"][nodes.CORDONED])
    assert record == {"by": "gpu-burnin remediator", "was_cordoned": False, "time": "2026-11-28T00:00:00Z"}
    cordoned = nodes.take_out_patch(a_node({"gpu-burnin/health": "failing"}, unschedulable=True), MARKS, T0)
    assert cordoned is not None and "unschedulable" not in cordoned["spec"]
    assert json.loads(cordoned["metadata"]["annotations"][nodes.CORDONED])["was_cordoned"] is True
    assert nodes.take_out_patch(a_node(), MARKS, T0) is None  # no request (a retest came first)


@pytest.mark.parametrize(
    ("record", "ours"),
    [
        ({"by": "gpu-burnin remediator", "was_cordoned": False, "time": "t"}, True),
        ({"by": "gpu-burnin remediator", "was_cordoned": True, "time": "t"}, False),
        ({"by": "gpu-burnin periodic", "run_id": "r", "time": "t"}, False),  # the old record: whose cordon?
        ({"by": "gpu-burnin remediator", "time": "t"}, False),
        ("not json", False),
    ],
)
def test_only_a_cordon_the_remediator_recorded_as_its_own_is_lifted(record, ours):
    text = record if isinstance(record, str) else json.dumps(record)
    assert nodes.cordoned_by_us({nodes.CORDONED: text}) is ours


# -- the whole process, with its threads --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(test, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if test():
            return True
        time.sleep(0.05)
    return False


def test_the_process_serves_a_request_seen_on_its_watch_and_relists_after_a_410(server, tmp_path):
    for i in range(10):
        server.add_node(f"g{i}", labels={"nvidia.com/gpu.present": "true"})
    contract_policy.install(server)
    token = contract_policy.remediator_token(server)
    api = connect(server.kubeconfig(tmp_path / "k", token=token), patience=Patience(total_s=2))
    port = free_port()
    timing = Timing(lease_s=1.5, renew_deadline_s=1.0, retry_s=0.1)
    config = Config(identity="r0", timing=timing, interval_s=0.5, settle_s=0.1, metrics_port=port)
    lines: list[str] = []
    process = Process(api, config, log=lines.append)
    stop = threading.Event()
    runner = threading.Thread(target=process.serve, args=(stop,))
    runner.start()
    try:
        assert until(lambda: any("leading" in line for line in lines) and process.view.version)

        def ask(name):
            server.edit_node(name, lambda n: n["metadata"]["labels"].update({"gpu-burnin/health": "failing"}))

        ask("g3")
        assert until(lambda: server.node("g3")["spec"].get("unschedulable"))
        server.compact()  # the watch's version is gone: the view lists again
        ask("g5")  # the brake: 1 of 10 is out already
        assert until(lambda: any(line.startswith("BRAKE HELD") for line in lines))
        assert any("expired: listing the GPU nodes again" in line for line in lines)

        def scraped() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

        assert until(lambda: "gpu_burnin_remediator_brake_held 1.0" in scraped())  # set as the pass ends
        assert "gpu_burnin_remediator_leader 1.0" in scraped()
        assert 'gpu_burnin_remediator_nodes{state="taken_out"} 1.0' in scraped()
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive() and "stopped" in lines
    assert "holderIdentity" not in server.lease("gpu-burnin", "gpu-burnin-remediator")["spec"]  # given back
