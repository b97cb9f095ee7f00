"""The node lifecycle (harness/kube/actions.py) through the real client, against the fake API server:
preflight and periodic as node agents (their own node only, every write checked against the contract's
admission rules, tests/contract_policy.py), retest and status as a person."""

import dataclasses
import datetime as dt
import json

import pytest

from harness import entrypoints
from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import KubeError, Patience, connect
from harness.kube.node import Marks, Outcome
from tests import contract_policy
from tests.kube_fake import FakeApiServer

MARKS = Marks()
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
GPU = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
PREFLIGHT = {"key": "gpu-burnin/preflight", "effect": "NoSchedule"}
UNHEALTHY = {"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}
GPU_NODE = {"nvidia.com/gpu.present": "true"}
NODE = "/api/v1/nodes/n1"
EVENTS = "/api/v1/namespaces/gpu-burnin/events"


def outcome(verdict: str, codes=(), summary="every test passed") -> Outcome:
    return Outcome(run_id="r1", verdict=verdict, codes=tuple(codes), summary=summary, when=NOW, command="preflight")


FAILED = dataclasses.replace(
    outcome("fail", ["DATA_MISMATCH"], "DATA_MISMATCH: GPU 3 (GPU-x): 2 bad products (remediation: replace-gpu)"),
    critical=True,
)
SLOW = outcome(
    "fail", ["LOW_THROUGHPUT"], "LOW_THROUGHPUT: GPU 1: 612 TFLOPS, floor 700 (remediation: inspect-hardware)"
)
INCOMPLETE = outcome("incomplete", ["HANG"], "HANG: GPU 1: worker did not start (remediation: reset-gpu)")


@pytest.fixture
def server():
    with FakeApiServer() as fake:
        contract_policy.install(fake)  # every node write and Event of a node agent, checked
        yield fake


class VirtualTime:
    """Waits that take no time: the retry discipline is checked, not slept through."""

    def __init__(self):
        self.now = 0.0
        self.waits = []

    def sleep(self, seconds):
        self.waits.append(seconds)
        self.now += seconds

    def clock(self):
        return self.now


def connected(server, tmp_path, token=None):
    time = VirtualTime()
    config = server.kubeconfig(tmp_path / f"kubeconfig-{token or 'person'}", token=token)
    made = connect(config, patience=Patience(total_s=20), sleep=time.sleep, clock=time.clock)
    made.waits = time.waits
    return made


@pytest.fixture
def api(server, tmp_path):
    """preflight's pod on n1: its own service account, its node claim, the node agents' rights."""
    return connected(server, tmp_path, contract_policy.agent_token(server, "preflight", "n1"))


@pytest.fixture
def periodic_api(server, tmp_path):
    return connected(server, tmp_path, contract_policy.agent_token(server, "periodic", "n1"))


@pytest.fixture
def person(server, tmp_path):
    """Someone with their own credentials (retest, status): no policy matches them."""
    return connected(server, tmp_path)


def joining(server, name="n1", **extra):
    """A node as it joins: the preflight taint and label, beside a GPU taint and labels of its own."""
    return server.add_node(
        name,
        labels={"gpu-burnin/preflight": "pending", "team": "vision", **GPU_NODE},
        annotations={"owner": "infra"},
        taints=[GPU, PREFLIGHT],
        **extra,
    )


def in_service(server, name, **labels):
    return server.add_node(name, labels={**GPU_NODE, **labels}, taints=[GPU])


def calls(server):
    return [(r.method, r.path) for r in server.requests]


def condition(server, name="n1"):
    return nodes.condition(server.node(name))


def test_a_pass_removes_exactly_the_preflight_taint_and_label(server, api):
    joining(server)
    done = actions.preflight(api, "n1", outcome("pass"), MARKS, NOW)
    node = server.node("n1")
    assert done.exit_code == 0
    assert node["spec"]["taints"] == [GPU]
    assert "gpu-burnin/preflight" not in node["metadata"]["labels"] and node["metadata"]["labels"]["team"] == "vision"
    assert node["metadata"]["annotations"]["owner"] == "infra"
    assert nodes.last_result(node)["verdict"] == "pass"
    assert (condition(server)["status"], condition(server)["reason"]) == ("True", "Passed")
    assert [e["reason"] for e in server.events] == ["GPUBurnInPassed"]
    # One read of the node; the taint first, the condition and the event, and the label last: its removal is
    # what deletes the preflight pod, so nothing may be left to do after it.
    assert calls(server) == [
        ("GET", NODE),
        ("PATCH", NODE),
        ("PATCH", f"{NODE}/status"),
        ("POST", EVENTS),
        ("PATCH", NODE),
    ]
    taint_patch, label_patch = [r.body for r in server.requests if r.method == "PATCH" and r.path == NODE]
    assert "taints" in taint_patch["spec"] and "labels" not in taint_patch["metadata"]
    assert label_patch["metadata"]["labels"] == {"gpu-burnin/preflight": None} and "spec" not in label_patch


def test_a_taint_added_by_another_writer_between_our_read_and_write_survives(server, api):
    joining(server)
    other = {"key": "example.com/maintenance", "value": "true", "effect": "NoSchedule"}
    server.after("GET", NODE, lambda s: s.edit_node("n1", lambda n: n["spec"]["taints"].append(other)))
    actions.preflight(api, "n1", outcome("pass"), MARKS, NOW)
    assert server.node("n1")["spec"]["taints"] == [GPU, other]
    patches = [r.status for r in server.requests if r.method == "PATCH" and r.path == NODE]
    assert patches == [409, 200, 200]  # the stale write refused, recomputed from a fresh read; then the label


def test_429_waits_as_told_and_5xx_are_retried(server, api):
    joining(server)
    server.fail("GET", NODE, 500)
    server.fail("PATCH", NODE, 429, headers={"Retry-After": "2"})
    server.fail("PATCH", f"{NODE}/status", 503, times=2)
    assert actions.preflight(api, "n1", outcome("pass"), MARKS, NOW).exit_code == 0
    assert 2.0 in api.waits and len(api.waits) == 4
    assert server.node("n1")["spec"]["taints"] == [GPU] and condition(server)["status"] == "True"


def test_retries_back_off_and_stop_at_the_time_bound(server, api):
    joining(server)
    server.fail("GET", NODE, 503, times=100)
    with pytest.raises(KubeError, match=r'get node "n1": gave up after \d+ attempts in \d+ s; last: HTTP 503'):
        actions.preflight(api, "n1", outcome("pass"), MARKS, NOW)
    assert sum(api.waits) <= 20 and api.waits[-1] > api.waits[0]  # backing off, within the bound
    assert PREFLIGHT in server.node("n1")["spec"]["taints"]


def test_a_failure_keeps_the_taint_labels_the_node_and_says_why(server, api):
    joining(server)
    done = actions.preflight(api, "n1", FAILED, MARKS, NOW)
    node = server.node("n1")
    assert done.exit_code == 1 and node["spec"]["taints"] == [GPU, PREFLIGHT]
    assert node["metadata"]["labels"]["gpu-burnin/preflight"] == "failed"
    assert (condition(server)["status"], condition(server)["reason"]) == ("False", "DATA_MISMATCH")
    [event] = server.events
    assert (event["type"], event["reason"]) == ("Warning", "GPUBurnInFailed")
    assert "2 bad products (remediation: replace-gpu)" in event["message"]


def test_an_incomplete_run_keeps_the_taint_and_says_why(server, api):
    joining(server)
    assert actions.preflight(api, "n1", INCOMPLETE, MARKS, NOW).exit_code == 2
    node = server.node("n1")
    assert PREFLIGHT in node["spec"]["taints"] and node["metadata"]["labels"]["gpu-burnin/preflight"] == "incomplete"
    assert condition(server)["status"] == "Unknown"
    assert server.events[0]["reason"] == "GPUBurnInIncomplete" and "worker did not start" in server.events[0]["message"]


def test_a_failing_node_that_lost_its_taint_gets_it_back(server, api):
    server.add_node("n1", labels={"gpu-burnin/preflight": "pending"}, taints=[GPU])
    actions.preflight(api, "n1", FAILED, MARKS, NOW)
    assert server.node("n1")["spec"]["taints"] == [GPU, PREFLIGHT]


def test_forbidden_and_missing_are_reported_at_once_and_change_nothing(server, api):
    joining(server)
    before = server.node("n1")
    server.forbid("patch", "nodes")
    with pytest.raises(KubeError) as caught:
        actions.preflight(api, "n1", outcome("pass"), MARKS, NOW)
    assert caught.value.status == 403 and 'cannot patch resource "nodes"' in str(caught.value)
    assert server.node("n1") == before and api.waits == []
    with pytest.raises(KubeError, match='nodes "gone" not found'):
        actions.preflight(api, "gone", outcome("pass"), MARKS, NOW)


def test_the_condition_never_turns_true_while_the_taint_is_still_there(server, api):
    joining(server)
    server.fail("PATCH", NODE, 500, times=1000)
    with pytest.raises(KubeError):
        actions.preflight(api, "n1", outcome("pass"), MARKS, NOW)
    assert condition(server) is None and PREFLIGHT in server.node("n1")["spec"]["taints"]


def test_periodic_pass_adds_nothing_but_the_condition_and_annotation(server, periodic_api):
    in_service(server, "n1")
    before = server.node("n1")
    assert actions.periodic(periodic_api, "n1", outcome("pass"), MARKS, actions.Fleet(), NOW).exit_code == 0
    after = server.node("n1")
    assert after["spec"] == before["spec"] and after["metadata"]["labels"] == before["metadata"]["labels"]
    assert set(after["metadata"]["annotations"]) - set(before["metadata"]["annotations"]) == {nodes.LAST_RESULT}
    assert condition(server)["status"] == "True" and server.events == []


def fleet(server, unhealthy: int, total: int = 20):
    in_service(server, "n1")
    for i in range(2, total + 1):
        extra = {"gpu-burnin/health": "unhealthy"} if i <= unhealthy + 1 else {}
        in_service(server, f"n{i}", **extra)
    server.add_node("cpu-only", labels={"team": "web"})  # not a GPU node: not counted


def test_a_periodic_failure_asks_for_the_node_to_be_taken_out_and_touches_nothing_else(server, periodic_api):
    """Periodic reports on its own node only: the request (health failing, severity, when and why), its
    condition and an Event in the tool's namespace. It neither lists the fleet nor cordons nor taints, and
    every write passes the contract's admission rules for periodic."""
    fleet(server, unhealthy=0)
    done = actions.periodic(periodic_api, "n1", FAILED, MARKS, actions.Fleet(), NOW)
    node = server.node("n1")
    assert done.exit_code == 1 and "gpu-burnin/health=failing, severity critical" in done.message
    assert "unschedulable" not in node["spec"] and node["spec"]["taints"] == [GPU]
    labels, annotations = node["metadata"]["labels"], node["metadata"]["annotations"]
    assert (labels["gpu-burnin/health"], labels["gpu-burnin/severity"]) == ("failing", "critical")
    requested = json.loads(annotations[nodes.REQUESTED])
    assert requested == {
        "by": "gpu-burnin preflight",  # the outcome's command (periodic's in production)
        "reason": FAILED.summary,
        "codes": ["DATA_MISMATCH"],
        "time": "2026-11-28T12:00:00Z",
    }
    assert nodes.CORDONED not in annotations
    assert (condition(server)["status"], condition(server)["reason"]) == ("False", "DATA_MISMATCH")
    [event] = server.events
    assert (event["reason"], event["metadata"]["namespace"]) == ("GPUBurnInFailing", "gpu-burnin")
    assert not [r for r in server.requests if r.path == "/api/v1/nodes"]  # never lists the fleet
    assert all(r.status < 300 for r in server.requests)  # nothing refused by RBAC or admission


def test_periodic_never_lists_nodes_even_with_the_whole_fleet_out(server, periodic_api):
    """The brake is the remediator's now: periodic's failure is the same request whatever the fleet shows
    (before, every periodic pod listed every GPU node, whole, to decide the brake by itself)."""
    fleet(server, unhealthy=10)
    server.forbid("list", "nodes")
    done = actions.periodic(periodic_api, "n1", SLOW, MARKS, actions.Fleet(), NOW)
    assert done.exit_code == 1
    labels = server.node("n1")["metadata"]["labels"]
    assert (labels["gpu-burnin/health"], labels["gpu-burnin/severity"]) == ("failing", "fail")


def test_a_request_is_never_lowered_nor_written_over_the_remediators_mark(server, periodic_api):
    in_service(server, "n1")
    actions.periodic(periodic_api, "n1", FAILED, MARKS, actions.Fleet(), NOW)
    first = server.node("n1")["metadata"]["annotations"][nodes.REQUESTED]
    later = dataclasses.replace(SLOW, when=NOW + dt.timedelta(hours=6))
    actions.periodic(periodic_api, "n1", later, MARKS, actions.Fleet(), NOW)
    node = server.node("n1")
    assert node["metadata"]["labels"]["gpu-burnin/severity"] == "critical"  # never lowered
    assert node["metadata"]["annotations"][nodes.REQUESTED] == first  # the first request keeps its place
    server.edit_node("n1", lambda n: n["metadata"]["labels"].update({"gpu-burnin/health": "unhealthy"}))
    actions.periodic(periodic_api, "n1", later, MARKS, actions.Fleet(), NOW)
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/health"] == "unhealthy"


def test_a_critical_failure_raises_a_fail_request(server, periodic_api):
    in_service(server, "n1")
    actions.periodic(periodic_api, "n1", SLOW, MARKS, actions.Fleet(), NOW)
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/severity"] == "fail"
    actions.periodic(periodic_api, "n1", FAILED, MARKS, actions.Fleet(), NOW)
    assert server.node("n1")["metadata"]["labels"]["gpu-burnin/severity"] == "critical"


def test_incomplete_runs_leave_the_node_in_service_until_the_limit(server, periodic_api):
    fleet(server, unhealthy=0)
    for expected in (2, 2):
        assert actions.periodic(periodic_api, "n1", INCOMPLETE, MARKS, actions.Fleet(), NOW).exit_code == expected
        assert "gpu-burnin/health" not in server.node("n1")["metadata"]["labels"]
    assert nodes.incomplete_streak(server.node("n1")) == 2
    done = actions.periodic(periodic_api, "n1", INCOMPLETE, MARKS, actions.Fleet(), NOW)
    assert done.exit_code == 1 and server.node("n1")["metadata"]["labels"]["gpu-burnin/health"] == "failing"
    assert nodes.last_result(server.node("n1"))["codes"][0] == "INCOMPLETE_STREAK"
    actions.periodic(periodic_api, "n1", outcome("pass"), MARKS, actions.Fleet(), NOW)
    assert nodes.incomplete_streak(server.node("n1")) == 0


def taken_out(server, name="n1", *, was_cordoned=False, severity="critical"):
    """A node as the remediator leaves it after a take-out."""
    record = {"by": "gpu-burnin remediator", "was_cordoned": was_cordoned, "time": "2026-11-28T11:00:00Z"}
    requested = {"by": "gpu-burnin watch", "reason": "x", "codes": ["XID"], "time": "2026-11-28T10:59:00Z"}
    labels = {**GPU_NODE, "gpu-burnin/health": "unhealthy", "gpu-burnin/severity": severity}
    annotations = {nodes.CORDONED: json.dumps(record), nodes.REQUESTED: json.dumps(requested)}
    remediation = {"type": "GPUBurnInRemediation", "status": "True", "reason": "TakenOut", "message": "x"}
    return server.add_node(
        name,
        labels=labels,
        annotations=annotations,
        taints=[GPU, UNHEALTHY],
        unschedulable=True,
        conditions=[remediation],
    )


def test_retest_puts_a_repaired_node_back_in_preflight(server, person):
    taken_out(server)
    done = actions.retest(person, "n1", MARKS, NOW)
    node = server.node("n1")
    assert done.exit_code == 0 and "unschedulable" not in node["spec"]
    assert node["spec"]["taints"] == [GPU, PREFLIGHT]
    labels, annotations = node["metadata"]["labels"], node["metadata"]["annotations"]
    assert labels["gpu-burnin/preflight"] == "pending"
    assert "gpu-burnin/health" not in labels and "gpu-burnin/severity" not in labels
    assert nodes.CORDONED not in annotations and nodes.REQUESTED not in annotations
    assert condition(server)["status"] == "Unknown"
    assert nodes.condition(node, nodes.REMEDIATION_CONDITION) is None  # the remediator's state goes with it


def test_retest_leaves_a_cordon_it_did_not_set(server, person):
    server.add_node("n1", labels=GPU_NODE, taints=[GPU], unschedulable=True)
    done = actions.retest(person, "n1", MARKS, NOW)
    assert server.node("n1")["spec"]["unschedulable"] is True and "stays cordoned" in done.message


def test_retest_leaves_an_admins_cordon_the_remediator_found_in_place(server, person):
    taken_out(server, was_cordoned=True)
    done = actions.retest(person, "n1", MARKS, NOW)
    assert server.node("n1")["spec"]["unschedulable"] is True and "stays cordoned" in done.message


def test_retest_does_not_lift_a_cordon_recorded_without_saying_who_cordoned_first(server, person):
    """A record of gpu-burnin's earlier cordon path ({by, run_id, time}, written even on a node an administrator
    had cordoned) cannot tell whose cordon it is: the cordon stays (before, retest lifted any cordon it found
    such a record on)."""
    old = {"by": "gpu-burnin periodic", "run_id": "r0", "time": "2026-11-20T00:00:00Z"}
    labels = {**GPU_NODE, "gpu-burnin/health": "unhealthy"}
    server.add_node(
        "n1", labels=labels, annotations={nodes.CORDONED: json.dumps(old)}, taints=[GPU], unschedulable=True
    )
    actions.retest(person, "n1", MARKS, NOW)
    node = server.node("n1")
    assert node["spec"]["unschedulable"] is True and "gpu-burnin/health" not in node["metadata"]["labels"]


def test_status_lists_gpu_nodes_by_state_and_calls_out_stuck_preflights(server, api, person):
    long_ago = "2026-11-28T08:00:00Z"
    server.add_node("new", labels={**GPU_NODE, "gpu-burnin/preflight": "pending"}, taints=[PREFLIGHT], created=long_ago)
    server.add_node("fresh", labels={**GPU_NODE, "gpu-burnin/preflight": "pending"}, created="2026-11-28T11:30:00Z")
    in_service(server, "bad", **{"gpu-burnin/health": "unhealthy"})
    in_service(server, "asking", **{"gpu-burnin/health": "failing"})
    in_service(server, "never")
    joining(server, "n1")
    actions.preflight(api, "n1", outcome("pass"), MARKS, NOW)
    server.add_node("cpu-only", labels={"team": "web"})
    found = {s.name: s for s in actions.status(person, MARKS, actions.Fleet(), pending_limit_s=7200, now=NOW)}
    assert set(found) == {"new", "fresh", "bad", "asking", "never", "n1"}
    assert found["new"].state == "preflight-pending" and found["new"].stuck and found["new"].for_s == 4 * 3600
    assert not found["fresh"].stuck
    assert (found["bad"].state, found["asking"].state) == ("unhealthy", "failing")
    assert (found["never"].state, found["n1"].state) == ("never-tested", "healthy")
    assert found["n1"].run_id == "r1"
    assert [r.method for r in server.requests[-1:]] == ["GET"] and "labelSelector" in server.requests[-1].query


@pytest.mark.parametrize("flow", ["periodic", "preflight"])
def test_a_failure_never_leaves_a_node_asking_to_go_out_that_reads_as_passed(server, tmp_path, flow):
    """Killed between its writes (here: the condition's write refused), a failing node must not end
    tainted or asking to be taken out while its GPUBurnIn condition still says True."""
    fleet(server, unhealthy=0)
    agent = connected(server, tmp_path, contract_policy.agent_token(server, flow, "n1"))
    actions.periodic(agent, "n1", outcome("pass"), MARKS, actions.Fleet(), NOW)
    assert condition(server)["status"] == "True"
    server.forbid("patch", "nodes", subresource="status")
    with pytest.raises(KubeError):
        if flow == "periodic":
            actions.periodic(agent, "n1", FAILED, MARKS, actions.Fleet(), NOW)
        else:
            actions.preflight(agent, "n1", FAILED, MARKS, NOW)
    node = server.node("n1")
    taints = node["spec"]["taints"]
    out = "gpu-burnin/health" in node["metadata"]["labels"] or PREFLIGHT in taints
    assert not (out and condition(server)["status"] == "True"), node
    statuses = [r.path for r in server.requests if r.method == "PATCH"]
    assert statuses[-1].endswith("/status")  # the condition is written first


def test_an_admission_denial_is_said_as_such_not_retried_as_a_conflict(server, periodic_api):
    """422 is the API server's validation or an admission policy refusing the write: said at once, with the
    policy's words (before, it was taken for a JSON Patch test that failed, and retried five times)."""
    in_service(server, "n1")
    server.admission = lambda who, old, new, resource, sub: (
        "ValidatingAdmissionPolicy 'gpu-burnin-periodic' denied request: no"
        if resource == "nodes" and not sub
        else None
    )
    with pytest.raises(KubeError) as caught:
        actions.periodic(periodic_api, "n1", SLOW, MARKS, actions.Fleet(), NOW)
    assert caught.value.status == 422 and "denied request: no" in str(caught.value)
    assert len([r for r in server.requests if r.method == "PATCH" and r.path == NODE]) == 1


PREFLIGHT_POD = {"app.kubernetes.io/name": "gpu-burnin", "app.kubernetes.io/component": "preflight"}


def test_status_says_why_each_preflight_is_held_from_its_pod_in_one_call(server, person):
    """The preflight pod's phase and what holds it, read from the tool's namespace only, label-selected."""
    old = "2026-11-28T08:00:00Z"
    for name in ("nogpu", "pull", "crash", "burning", "orphan"):
        # nogpu: the device plugin does not tolerate the preflight taint, so no GPU is allocatable there.
        status = {"allocatable": {"cpu": "96"}} if name == "nogpu" else None
        labels = {**GPU_NODE, "gpu-burnin/preflight": "pending"}
        server.add_node(name, labels=labels, taints=[PREFLIGHT], created=old, status=status)
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
    }
    server.add_pod(
        "gpu-burnin",
        "pre-a",
        node="",
        for_node="nogpu",
        labels=PREFLIGHT_POD,
        phase="Pending",
        status={"conditions": [unschedulable]},
    )
    pulling = {
        "name": "burn",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "r/x:1"'}},
    }
    server.add_pod(
        "gpu-burnin",
        "pre-b",
        node="pull",
        labels=PREFLIGHT_POD,
        phase="Pending",
        status={"containerStatuses": [pulling]},
    )
    looping = {"name": "burn", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}}
    server.add_pod(
        "gpu-burnin",
        "pre-c",
        node="crash",
        labels=PREFLIGHT_POD,
        phase="Running",
        status={"containerStatuses": [looping]},
    )
    server.add_pod("gpu-burnin", "pre-d", node="burning", labels=PREFLIGHT_POD, phase="Running")
    # Not the tool's: another namespace's pod with the same labels, and a pod of the tool's without them.
    server.add_pod("ml", "impostor", node="orphan", labels=PREFLIGHT_POD, phase="Running")
    server.add_pod("gpu-burnin", "watch-x", node="orphan", labels={"app.kubernetes.io/component": "watch"})
    before = len(server.requests)
    found = {s.name: s for s in actions.status(person, MARKS, actions.Fleet(), pending_limit_s=7200, now=NOW)}
    assert found["nogpu"].stuck
    assert found["nogpu"].why == (
        "pod pre-a: Pending: Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu.; "
        "no nvidia.com/gpu allocatable: is the device plugin running (tolerating the preflight taint)?"
    )
    assert found["nogpu"].gpus == "?/?"
    assert found["pull"].why == 'pod pre-b: Pending: container burn: ImagePullBackOff: Back-off pulling image "r/x:1"'
    assert found["crash"].why == "pod pre-c: Running: container burn: CrashLoopBackOff: back-off 5m0s"
    assert found["burning"].why == "pod pre-d: Running"
    assert found["orphan"].why == "no preflight pod for this node"
    listed = [r for r in server.requests[before:] if "pods" in r.path]
    assert [(r.method, r.path) for r in listed] == [("GET", "/api/v1/namespaces/gpu-burnin/pods")]
    assert listed[0].query["labelSelector"] == "app.kubernetes.io/name=gpu-burnin,app.kubernetes.io/component=preflight"
    assert all(r.query.get("resourceVersion") == "0" for r in server.requests[before:])
    assert all(r.method == "GET" for r in server.requests[before:])  # read-only
    table = "\n".join(entrypoints.status_table(list(found.values()), 7200))
    assert "STUCK: pending over 2h: pod pre-a: Pending: Unschedulable: 0/1 nodes are available" in table


def test_status_without_the_right_to_list_pods_still_lists_the_nodes(server, person):
    server.add_node("n1", labels={**GPU_NODE, "gpu-burnin/preflight": "pending"}, taints=[PREFLIGHT])
    server.forbid("list", "pods")
    (found,) = actions.status(person, MARKS, actions.Fleet(), pending_limit_s=7200, now=NOW)
    assert found.why.startswith("the preflight pods cannot be read: HTTP 403")


def test_status_fails_a_node_with_fewer_gpus_allocatable_than_it_should_have(server, person):
    server.add_node(
        "seven", labels={**GPU_NODE, "nvidia.com/gpu.count": "8"}, status={"allocatable": {"nvidia.com/gpu": "7"}}
    )
    server.add_node("eight", labels={**GPU_NODE, "nvidia.com/gpu.count": "8"})
    server.add_node("unlabelled", labels=GPU_NODE, status={"allocatable": {"nvidia.com/gpu": "7"}})
    found = {s.name: s for s in actions.status(person, MARKS, actions.Fleet(), pending_limit_s=7200, now=NOW)}
    assert found["seven"].codes == ("GPU_MISSING",) and found["seven"].gpus == "7/8"
    assert found["seven"].why == "GPU_MISSING (fail): 7 of 8 GPUs allocatable (nvidia.com/gpu.count=8)"
    assert (found["eight"].codes, found["eight"].gpus, found["eight"].why) == ((), "8/8", "")
    # Nothing says how many to expect: unknown, not a failure.
    assert (found["unlabelled"].codes, found["unlabelled"].gpus) == ((), "7/?")
