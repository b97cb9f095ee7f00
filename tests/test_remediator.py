"""`gpu-burnin remediator` against the fake API server, through the real client: the brake decided in one
place, take-outs, drains through the Eviction API, and two replicas sharing a Lease. Every write is checked
against the contract's admission rules (tests/contract_policy.py); time is virtual."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from harness.kube import node as nodes
from tests import contract_policy
from tests.kube_fake import FakeApiServer
from tests.kube_fake_parts import rights
from tests.remediator_replica import Replica
from tests.watch_fleet import EPOCH, SCENARIOS, Nodes, events

GPU_NODE = {"nvidia.com/gpu.present": "true"}
UNHEALTHY = {"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}
GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
LEASE = "/apis/coordination.k8s.io/v1/namespaces/gpu-burnin/leases/gpu-burnin-remediator"


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        contract_policy.install(fake)
        yield fake


def gpu_nodes(server, count, *, prefix="n"):
    for i in range(count):
        server.add_node(f"{prefix}{i:02d}", labels=GPU_NODE, taints=[GPU_TAINT])


def ask(server, name, *, minutes=0, severity="fail", by="gpu-burnin watch"):
    """A node agent's request, as it lands on the node (its `requested` time `minutes` after the epoch)."""
    when = nodes.stamp(EPOCH + dt.timedelta(minutes=minutes))
    requested = json.dumps({"by": by, "reason": "x", "codes": ["XID"], "time": when})

    def change(node):
        node["metadata"]["labels"].update({"gpu-burnin/health": "failing", "gpu-burnin/severity": severity})
        node["metadata"]["annotations"][nodes.REQUESTED] = requested

    server.edit_node(name, change)


def out(server, name, *, how="unhealthy"):
    def change(node):
        if how == "unhealthy":
            node["metadata"]["labels"]["gpu-burnin/health"] = "unhealthy"
        elif how == "cordoned":
            node["spec"]["unschedulable"] = True
        else:  # NotReady: the node lifecycle controller's Unknown
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            ready.update(status="Unknown", reason="NodeStatusUnknown")

    server.edit_node(name, change)


def state(server, name):
    node = server.node(name)
    cond = nodes.condition(node, nodes.REMEDIATION_CONDITION) or {}
    return {
        "cordoned": bool(node["spec"].get("unschedulable")),
        "tainted": UNHEALTHY in (node["spec"].get("taints") or []),
        "health": node["metadata"]["labels"].get("gpu-burnin/health"),
        "condition": (cond.get("status"), cond.get("reason")),
    }


def taken(server, name):
    return state(server, name) | {"condition": None} == {
        "cordoned": True,
        "tainted": True,
        "health": "unhealthy",
        "condition": None,
    }


def node_writes(server, name):
    """The writes of a node's metadata and spec that changed it (a 200 that moved its resourceVersion)."""
    return [r for r in server.requests if r.method == "PATCH" and r.path == f"/api/v1/nodes/{name}" and r.status == 200]


# -- from a finding to a take-out -------------------------------------------------------------------------------


def test_a_fault_the_watch_finds_is_taken_out_by_the_remediator_within_one_pass(server, tmp_path):
    fleet = Nodes(server, tmp_path)  # nine healthy GPU nodes beside
    fleet.add("n1", SCENARIOS / "row-remap-pending.toml")
    fleet.run(120)  # held three polls: the watch asks
    assert state(server, "n1")["health"] == "failing" and not state(server, "n1")["cordoned"]
    replica = Replica(server, tmp_path, clock=fleet.clock)
    assert replica.step()
    assert state(server, "n1") == {
        "cordoned": True,
        "tainted": True,
        "health": "unhealthy",
        "condition": ("True", "TakenOut"),
    }
    record = json.loads(server.node("n1")["metadata"]["annotations"][nodes.CORDONED])
    assert record == {"by": "gpu-burnin remediator", "was_cordoned": False, "time": "2026-11-28T00:02:00Z"}
    assert events(server, "n1") == [("n1", "GPUBurnInFailing"), ("n1", "GPUBurnInTakenOut")]
    refused = [(r.method, r.path, r.status) for r in server.requests if r.status >= 300]
    assert refused == [("GET", LEASE, 404)]  # no Lease yet; nothing refused by RBAC or the contract's admission
    assert "gpu_burnin_remediator_take_outs_total 1.0" in replica.metrics


def test_the_remediators_reads_are_label_selected_metadata_from_the_watch_cache(server, tmp_path):
    gpu_nodes(server, 3)
    server.add_node("cpu-0", labels={"team": "web"})
    ask(server, "n00")
    Replica(server, tmp_path).step()
    lists = [r for r in server.requests if r.method == "GET" and r.path == "/api/v1/nodes"]
    assert lists and all(r.query["labelSelector"] == "nvidia.com/gpu.present=true" for r in lists)
    assert all(r.query["resourceVersion"] == "0" for r in lists)
    gets = [r.path for r in server.requests if r.method == "GET" and r.path.startswith("/api/v1/nodes/")]
    assert gets == ["/api/v1/nodes/n00"]  # whole: only the node it takes out
    assert "cpu-0" not in json.dumps([r.body for r in server.requests])


# -- the brake ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["unhealthy", "cordoned", "not-ready"])
def test_two_of_twenty_out_brakes_the_third_with_one_event_not_one_per_pass(server, tmp_path, how):
    gpu_nodes(server, 20)
    out(server, "n18")
    out(server, "n19", how=how)  # cordoned by someone else, or NotReady: out all the same
    ask(server, "n00")
    replica = Replica(server, tmp_path)
    for _ in range(3):
        replica.step()
        replica.clock.t += 30
    assert state(server, "n00") == {
        "cordoned": False,
        "tainted": False,
        "health": "failing",
        "condition": ("False", "Braked"),
    }
    braked = [e for e in server.events if e["reason"] == "GPUBurnInBraked"]
    assert [(e["involvedObject"]["name"], e["type"]) for e in braked] == [("n00", "Warning")]
    assert "--max-unhealthy-share" in braked[0]["message"] and "--max-unhealthy-nodes" in braked[0]["message"]
    assert [line for line in replica.lines if "BRAKE HELD" in line] == [
        "BRAKE HELD: 2 of 20 GPU nodes in service are out, the limit is 1 (at most 0.05 of the GPU nodes "
        "(--max-unhealthy-share) and at most 50 (--max-unhealthy-nodes) may be out of service); 1 request(s) "
        "wait, oldest first: n00. A bad baseline or driver roll-out looks like this: check it before the nodes"
    ]
    assert "gpu_burnin_remediator_brake_held 1.0" in replica.metrics
    assert "gpu_burnin_remediator_braked_nodes 1.0" in replica.metrics
    # One condition write for the braked node, not one a pass.
    assert len([r for r in server.requests if r.path == "/api/v1/nodes/n00/status"]) == 1


def test_a_fleet_of_ten_may_take_out_its_one_bad_node(server, tmp_path):
    """5% of 10 is half a node: at least one may always be out (before, a fleet under 20 GPU nodes could
    never cordon: (out + 1) / total > share held for 1 of 10)."""
    gpu_nodes(server, 10)
    ask(server, "n03")
    Replica(server, tmp_path).step()
    assert taken(server, "n03")


def test_the_absolute_limit_holds_when_the_share_would_allow_more(server, tmp_path):
    gpu_nodes(server, 100)  # 5%: five nodes; --max-unhealthy-nodes 2: two
    for i in range(4):
        ask(server, f"n{i:02d}", minutes=i)
    Replica(server, tmp_path, max_nodes=2).step()
    assert [n for n in (f"n{i:02d}" for i in range(4)) if taken(server, n)] == ["n00", "n01"]
    assert [state(server, f"n{i:02d}")["condition"] for i in (2, 3)] == [("False", "Braked")] * 2


def test_a_roll_out_failing_everywhere_at_once_takes_out_only_the_brakes_number(server, tmp_path):
    fleet = Nodes(server, tmp_path)  # 9 bystanders + 20 watched: 29 GPU nodes, share 0.1: 2 may be out
    names = [f"w{n:02d}" for n in range(20)]
    for name in names:  # a bad driver roll-out: every node reports a pending remap at the same moment
        fleet.add(name, SCENARIOS / "row-remap-pending.toml")
    fleet.run(120)
    replica = Replica(server, tmp_path, clock=fleet.clock, max_share=0.1)
    for _ in range(4):
        replica.step()
        fleet.run(30)
    cordoned = [n for n in names if server.node(n)["spec"].get("unschedulable")]
    assert len(cordoned) == 2
    for name in names:
        expected = "GPUBurnInTakenOut" if name in cordoned else "GPUBurnInBraked"
        assert events(server, name) == [(name, "GPUBurnInFailing"), (name, expected)]


def test_when_the_brake_lifts_the_oldest_request_goes_first(server, tmp_path):
    gpu_nodes(server, 20)
    out(server, "n19")
    ask(server, "n05", minutes=30)
    ask(server, "n07", minutes=10)  # the oldest
    ask(server, "n01", minutes=20)
    replica = Replica(server, tmp_path)
    replica.step()
    assert [state(server, n)["condition"] for n in ("n05", "n07", "n01")] == [("False", "Braked")] * 3
    server.edit_node("n19", lambda n: n["metadata"]["labels"].pop("gpu-burnin/health"))  # repaired: retest
    replica.clock.t += 30
    replica.step()
    assert taken(server, "n07") and not taken(server, "n01") and not taken(server, "n05")
    assert state(server, "n07")["condition"] == ("True", "TakenOut")
    assert [e["reason"] for e in server.events if e["involvedObject"]["name"] == "n07"] == [
        "GPUBurnInBraked",
        "GPUBurnInTakenOut",
    ]


def test_a_node_cordoned_by_an_administrator_is_taken_out_at_no_cost_and_stays_cordoned_after_retest(server, tmp_path):
    from harness.kube import actions
    from harness.kube.api import connect

    gpu_nodes(server, 20)
    out(server, "n19")  # the one node the brake allows is out already
    out(server, "n04", how="cordoned")  # an administrator's cordon
    ask(server, "n04")
    Replica(server, tmp_path).step()
    assert taken(server, "n04")  # out already: counted, so its take-out costs nothing
    record = json.loads(server.node("n04")["metadata"]["annotations"][nodes.CORDONED])
    assert record["was_cordoned"] is True
    person = connect(server.kubeconfig(tmp_path / "person"))
    done = actions.retest(person, "n04", nodes.Marks(), EPOCH)
    assert server.node("n04")["spec"]["unschedulable"] is True and "stays cordoned" in done.message
    assert "gpu-burnin/health" not in server.node("n04")["metadata"]["labels"]


def test_a_request_withdrawn_before_the_take_out_is_left_alone(server, tmp_path):
    gpu_nodes(server, 10)
    ask(server, "n02")
    replica = Replica(server, tmp_path)
    replica.process.view.relist()
    server.edit_node("n02", lambda n: n["metadata"]["labels"].pop("gpu-burnin/health"))  # a retest, just now
    replica.process.elector.tick()
    replica.process.remediator.begin()
    replica.process.remediator.run_pass()
    assert not state(server, "n02")["cordoned"] and node_writes(server, "n02") == []


# -- draining -----------------------------------------------------------------------------------------------------


def pods_on(server, name):
    server.add_pod("ml", "train-0", node=name, gpus=8, owner="ReplicaSet")
    server.add_pod("kube-system", "dcgm-exporter-x", node=name, gpus=8, owner="DaemonSet")
    server.add_pod("web", "frontend", node=name)
    server.add_pod("ml", "finished", node=name, gpus=1, phase="Succeeded")
    server.add_pod("kube-system", "static-gpu", node=name, gpus=1, annotations={"kubernetes.io/config.mirror": "x"})
    server.add_pod("ml", "elsewhere", node="n09", gpus=8)


def evictions(server):
    return [(r.path.split("/")[6], r.status) for r in server.requests if r.path.endswith("/eviction")]


def test_a_critical_node_has_its_gpu_pods_evicted_and_nothing_else(server, tmp_path):
    gpu_nodes(server, 10)
    pods_on(server, "n01")
    ask(server, "n01", severity="critical")
    replica = Replica(server, tmp_path)
    replica.step()
    assert taken(server, "n01") and evictions(server) == [("train-0", 201)]
    going = [p["metadata"]["name"] for p in server.pods if p["metadata"].get("deletionTimestamp")]
    assert going == ["train-0"]
    assert state(server, "n01")["condition"] == ("True", "Draining")
    server.finish_deletions()
    replica.clock.t += 31
    replica.step()
    assert state(server, "n01")["condition"] == ("True", "Drained")
    assert [e["reason"] for e in server.events] == ["GPUBurnInTakenOut", "GPUBurnInEvicted", "GPUBurnInDrained"]
    replica.clock.t += 600
    replica.step()  # drained: nothing more
    assert evictions(server) == [("train-0", 201)] and len(server.events) == 3


def test_a_disruption_budgets_429_is_retried_with_back_off_not_at_every_pass(server, tmp_path):
    gpu_nodes(server, 10)
    pods_on(server, "n01")
    server.protect("ml", "train-0")
    ask(server, "n01", severity="critical")
    replica = Replica(server, tmp_path)
    for _ in range(60):  # ten minutes of passes every ten seconds
        replica.step()
        replica.clock.t += 10
    refused = evictions(server)
    assert refused and set(refused) == {("train-0", 429)}
    assert len(refused) <= 6  # 10, 20, 40, 80, 160, 320 s apart: not sixty times
    assert state(server, "n01")["condition"] == ("True", "DrainBlocked")
    assert [e["reason"] for e in server.events] == ["GPUBurnInTakenOut", "GPUBurnInDrainBlocked"]  # said once
    server.unprotect("ml", "train-0")
    for _ in range(70):
        replica.step()
        replica.clock.t += 10
    assert evictions(server)[-1] == ("train-0", 201) and evictions(server).count(("train-0", 201)) == 1
    assert node_writes(server, "n01")[0].body["spec"]["unschedulable"] is True and len(node_writes(server, "n01")) == 1


def test_a_failing_node_is_not_drained_unless_asked(server, tmp_path):
    gpu_nodes(server, 10)
    pods_on(server, "n01")
    ask(server, "n01", severity="fail")
    Replica(server, tmp_path).step()
    assert taken(server, "n01") and evictions(server) == []
    assert state(server, "n01")["condition"] == ("True", "TakenOut")
    Replica(server, tmp_path, "remediator-1", drain="fail").step()  # a replica told to drain every failure
    assert evictions(server) == []  # the Lease is the first replica's: it alone acts


def test_drain_fail_drains_a_failing_node(server, tmp_path):
    gpu_nodes(server, 10)
    pods_on(server, "n01")
    ask(server, "n01", severity="fail")
    Replica(server, tmp_path, drain="fail").step()
    assert evictions(server) == [("train-0", 201)]


def test_an_overdue_drain_is_reported_and_nothing_forced(server, tmp_path):
    gpu_nodes(server, 10)
    pods_on(server, "n01")
    server.protect("ml", "train-0")
    ask(server, "n01", severity="critical")
    replica = Replica(server, tmp_path)
    replica.step()
    replica.clock.t += 7 * 86400  # a week later, the budget still allows nothing
    replica.step()
    replica.clock.t += 3600
    replica.step()
    assert state(server, "n01")["condition"] == ("True", "DrainOverdue")
    overdue = [e for e in server.events if e["reason"] == "GPUBurnInDrainOverdue"]
    assert len(overdue) == 1 and "ml/train-0" in overdue[0]["message"] and "nothing is forced" in overdue[0]["message"]
    assert not [r for r in server.requests if r.method == "DELETE"]
    assert 'gpu_burnin_remediator_drains{state="overdue"} 1.0' in replica.metrics


def test_force_after_deletes_what_the_budget_still_holds(server, tmp_path):
    gpu_nodes(server, 10)
    pods_on(server, "n01")
    server.protect("ml", "train-0")
    ask(server, "n01", severity="critical")
    replica = Replica(server, tmp_path, force_after_s=86400.0)
    # --force-after needs `delete pods`, which the contract's RBAC does not grant: an overlay adds it.
    granted = contract_policy.REMEDIATOR_RIGHTS | rights("delete pods")
    server.identity(replica.token, contract_policy.user("remediator"), rights=granted)
    replica.step()
    replica.clock.t += 86400
    replica.step()
    assert [r.path for r in server.requests if r.method == "DELETE"] == ["/api/v1/namespaces/ml/pods/train-0"]
    assert [e["reason"] for e in server.events if e["reason"] == "GPUBurnInForced"] == ["GPUBurnInForced"]


# -- two replicas, one Lease --------------------------------------------------------------------------------------


def test_only_the_lease_holder_acts(server, tmp_path):
    gpu_nodes(server, 10)
    ask(server, "n01")
    first, second = Replica(server, tmp_path, "remediator-0"), Replica(server, tmp_path, "remediator-1")
    second.clock = first.clock
    assert first.step() and not second.step()
    lease = server.lease("gpu-burnin", "gpu-burnin-remediator")
    assert lease["spec"]["holderIdentity"] == "remediator-0" and lease["spec"]["leaseDurationSeconds"] == 15


@pytest.mark.parametrize("dies_after", ["the take-out's patch", "its event"])
def test_a_leader_killed_mid_take_out_is_finished_by_the_other_once_the_lease_expires(server, tmp_path, dies_after):
    gpu_nodes(server, 10)
    ask(server, "n01")
    leader = Replica(server, tmp_path, "remediator-0")
    other = Replica(server, tmp_path, "remediator-1", clock=leader.clock)
    assert leader.process.elector.tick()  # remediator-0 takes the Lease
    assert not other.step()  # remediator-1 finds it held, and waits
    path = "/api/v1/nodes/n01" if dies_after == "the take-out's patch" else "/api/v1/namespaces/gpu-burnin/events"
    method = "PATCH" if dies_after == "the take-out's patch" else "POST"
    server.after(method, path, lambda s: s.revoke(leader.token))  # the pod dies: its token is no more
    leader.step()
    assert state(server, "n01")["health"] == "unhealthy" and state(server, "n01")["condition"] == (None, None)
    leader.clock.t += 10
    assert not other.step()  # the Lease has not expired yet: the survivor waits
    leader.clock.t += 6  # 16 s after the survivor saw the Lease last change: past its 15 s
    assert other.step()
    lease = server.lease("gpu-burnin", "gpu-burnin-remediator")["spec"]
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("remediator-1", 1)
    assert state(server, "n01") == {
        "cordoned": True,
        "tainted": True,
        "health": "unhealthy",
        "condition": ("True", "TakenOut"),
    }
    assert len(node_writes(server, "n01")) == 1  # the take-out once
    assert [e["reason"] for e in server.events] == ["GPUBurnInTakenOut"]  # its Event once
    other.clock.t += 30
    other.step()
    assert len([r for r in server.requests if r.path == "/api/v1/nodes/n01/status" and r.status == 200]) == 1


def test_a_replica_that_cannot_renew_stops_acting_before_the_other_may_start(server, tmp_path):
    gpu_nodes(server, 10)
    leader = Replica(server, tmp_path, "remediator-0")
    assert leader.step()
    server.fail("PUT", LEASE, 503, times=100)
    leader.clock.t += 11  # past the renew deadline (10 s), short of the lease (15 s)
    assert not leader.process.elector.tick() and not leader.process.elector.leading()
    assert any("no longer leading" in line for line in leader.lines)


def test_once_takes_the_lease_for_one_pass_and_exits(server, tmp_path, capsys):
    from harness import cli

    gpu_nodes(server, 10)
    ask(server, "n01")
    token = contract_policy.remediator_token(server, "by-hand")
    config = server.kubeconfig(tmp_path / "k", token=token)
    assert cli.main(["remediator", "--kubeconfig", str(config), "--once", "--identity", "by-hand"]) == 0
    assert taken(server, "n01")
    assert "pass done: 1 taken out, 1 of 10 GPU nodes in service out (limit 1)" in capsys.readouterr().err
    assert "holderIdentity" not in server.lease("gpu-burnin", "gpu-burnin-remediator")["spec"]  # given back
    Replica(server, tmp_path, "remediator-0").step()  # the Deployment's replica holds it now
    assert cli.main(["remediator", "--kubeconfig", str(config), "--once", "--identity", "by-hand"]) == 2
    assert "is held by remediator-0: nothing was done" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "flag"),
    [
        (["--max-unhealthy-share", "1.5"], "--max-unhealthy-share"),
        (["--max-unhealthy-nodes", "0"], "--max-unhealthy-nodes"),
        (["--drain", "always"], "--drain"),
        (["--lease-duration", "5"], "--lease-duration"),
        (["--metrics-port", "70000"], "--metrics-port"),
        (["--namespace", "Not_A_Namespace"], "--namespace"),
    ],
)
def test_bad_options_are_one_line_and_exit_4(server, tmp_path, capsys, given, flag):
    from harness import cli

    config = server.kubeconfig(tmp_path / "k")
    assert cli.main(["remediator", "--kubeconfig", str(config), "--once", *given]) == 4
    err = capsys.readouterr().err
    assert err.startswith("gpu-burnin: error: ") and flag in err and err.count("\n") == 1
    assert server.requests == []
