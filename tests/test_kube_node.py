"""What gpu-burnin writes on a node, computed from plain dicts (harness/kube/node.py)."""

import datetime as dt
import json

import pytest

from harness.errors import ConfigError
from harness.kube import node as nodes
from harness.kube.node import Label, Marks, Taint

MARKS = Marks()
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
PREFLIGHT = {"key": "gpu-burnin/preflight", "effect": "NoSchedule"}


def a_node(taints=(), labels=None, annotations=None, unschedulable=False, conditions=()):
    return {
        "metadata": {
            "name": "n1",
            "uid": "u-1",
            "resourceVersion": "41",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {"taints": list(taints), **({"unschedulable": True} if unschedulable else {})},
        "status": {"conditions": list(conditions)},
    }


def test_removing_our_taint_writes_the_whole_list_with_the_others_kept_and_the_version_read():
    body = nodes.patch(a_node([GPU_TAINT, PREFLIGHT]), remove=[MARKS.preflight_taint])
    assert body == {"metadata": {"resourceVersion": "41"}, "spec": {"taints": [GPU_TAINT]}}


def test_a_taint_already_there_or_already_gone_leaves_the_list_unwritten():
    assert "spec" not in nodes.patch(a_node([PREFLIGHT]), add=[MARKS.preflight_taint])
    assert "spec" not in nodes.patch(a_node([GPU_TAINT]), remove=[MARKS.preflight_taint])
    added = nodes.patch(a_node([GPU_TAINT]), add=[MARKS.unhealthy_taint], unschedulable=True)
    assert added["spec"] == {
        "taints": [GPU_TAINT, {"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}],
        "unschedulable": True,
    }


def test_labels_and_annotations_set_or_deleted_with_null():
    body = nodes.patch(
        a_node(labels={"gpu-burnin/preflight": "pending", "team": "a"}),
        set_labels={"gpu-burnin/preflight": None},
        set_annotations={nodes.LAST_RESULT: "{}"},
    )
    assert body["metadata"] == {
        "resourceVersion": "41",
        "labels": {"gpu-burnin/preflight": None},
        "annotations": {nodes.LAST_RESULT: "{}"},
    }


def test_the_condition_moves_its_transition_time_only_when_its_status_changes():
    first = nodes.status_patch(a_node(), "True", "Passed", "ok", NOW)["status"]["conditions"][0]
    assert first["lastTransitionTime"] == first["lastHeartbeatTime"] == "2026-11-28T12:00:00Z"
    earlier = {**first, "lastTransitionTime": "2026-11-01T00:00:00Z"}
    later = NOW + dt.timedelta(hours=1)
    same = nodes.status_patch(a_node(conditions=[earlier]), "True", "Passed", "ok", later)["status"]["conditions"][0]
    assert same["lastTransitionTime"] == "2026-11-01T00:00:00Z" and same["lastHeartbeatTime"] == "2026-11-28T13:00:00Z"
    moved = nodes.status_patch(a_node(conditions=[earlier]), "False", "HANG", "x", later)["status"]["conditions"][0]
    assert moved["lastTransitionTime"] == "2026-11-28T13:00:00Z"


def event(key="r1", reason="GPUBurnInFailed", **extra):
    given = {"namespace": "gpu-ops", "key": key, "warning": True, "reason": reason, "message": "x", "now": NOW}
    return nodes.event(a_node(), **{**given, **extra})


def test_an_event_names_the_node_in_the_tools_namespace_and_fits_the_api():
    found = event(message="x" * 5000)
    # The API server accepts an Event about an object without a namespace only in "default": the involved
    # Node carries the Event's own namespace, so that the tool's Events stay in the tool's namespace.
    assert found["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "n1",
        "uid": "u-1",
        "namespace": "gpu-ops",
    }
    assert found["type"] == "Warning" and len(found["message"]) == 1024
    assert found["metadata"]["namespace"] == "gpu-ops" and found["metadata"]["name"].startswith("n1.")
    assert found["reportingComponent"] == found["source"]["component"] == "gpu-burnin"


def test_an_events_name_follows_what_it_announces_so_a_retry_is_not_a_second_event():
    assert event()["metadata"]["name"] == event(message="other words")["metadata"]["name"]
    assert event()["metadata"]["name"] != event(key="r2")["metadata"]["name"]
    assert event()["metadata"]["name"] != event(reason="GPUBurnInPassed")["metadata"]["name"]


def test_the_last_result_annotation_reads_back():
    outcome = nodes.Outcome(run_id="r1", verdict="fail", codes=("HANG",), summary="s", when=NOW, command="periodic")
    node = a_node(annotations={nodes.LAST_RESULT: nodes.last_result_value(outcome), nodes.INCOMPLETE_STREAK: "2"})
    assert nodes.last_result(node) == {
        "run_id": "r1",
        "verdict": "fail",
        "codes": ["HANG"],
        "time": "2026-11-28T12:00:00Z",
        "command": "periodic",
    }
    assert nodes.incomplete_streak(node) == 2
    assert nodes.last_result(a_node(annotations={nodes.LAST_RESULT: "not json"})) == {}
    assert nodes.incomplete_streak(a_node(annotations={nodes.INCOMPLETE_STREAK: "x"})) == 0
    assert json.loads(nodes.last_result_value(outcome))["codes"] == ["HANG"]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("gpu-burnin/preflight:NoSchedule", Taint("gpu-burnin/preflight", "", "NoSchedule")),
        ("a/b=c:NoSchedule", Taint("a/b", "c", "NoSchedule")),
    ],
)
def test_taints_parse_as_kubectl_writes_them(text, parsed):
    assert Taint.parse(text, option="preflight_taint") == parsed and str(parsed) == text


@pytest.mark.parametrize(
    "text",
    # NoExecute would evict the node's pods past their disruption budgets; PreferNoSchedule keeps none out.
    [
        "no-effect",
        "a:Sometimes",
        ":NoSchedule",
        "gpu-burnin/x:NoExecute",
        "gpu-burnin/x:PreferNoSchedule",
        "a=b c:NoSchedule",
    ],
)
def test_a_bad_taint_names_its_option(text):
    with pytest.raises(ConfigError) as caught:
        Taint.parse(text, option="--preflight-taint")
    assert caught.value.option == "--preflight-taint"


def test_labels_parse():
    assert Label.parse("gpu-burnin/health=unhealthy", option="x") == Label("gpu-burnin/health", "unhealthy")
    with pytest.raises(ConfigError):
        Label.parse("just-a-key", option="x")


def test_marks_follow_the_prefix_and_refuse_other_owners_keys():
    flags = {"preflight_taint": "--preflight-taint", "unhealthy_label": "--unhealthy-label"}
    moved = Marks.under("burnin.example.com/")
    assert str(moved.preflight_taint) == "burnin.example.com/preflight:NoSchedule"
    assert str(moved.unhealthy_label) == "burnin.example.com/health=unhealthy"
    assert moved.check("burnin.example.com/", flags) is moved
    for marks, flag in (
        (Marks(preflight_taint=Taint("nvidia.com/gpu", "", "NoSchedule")), "--preflight-taint"),
        (Marks(unhealthy_label=Label("team", "x")), "--unhealthy-label"),
        (Marks(unhealthy_label=Label("gpu-burnin/", "x")), "--unhealthy-label"),
        (Marks(unhealthy_label=Label("gpu-burnin/a/b", "x")), "--unhealthy-label"),
        (Marks(unhealthy_label=Label("gpu-burnin/" + "x" * 64, "x")), "--unhealthy-label"),
    ):
        with pytest.raises(ConfigError) as caught:
            marks.check(nodes.PREFIX, flags)
        assert caught.value.option == flag


@pytest.mark.parametrize("name", ["", "UPPER", "a_b", "a/../b", "-a", "a.", "x" * 254, "n1\x1b[2J"])
def test_node_names_are_checked_as_kubernetes_does(name):
    with pytest.raises(ConfigError) as caught:
        nodes.check_node_name(name)
    assert "\x1b" not in caught.value.problem  # shown escaped, never raw
    assert nodes.check_node_name("ip-10-0-0-1.ec2.internal") == "ip-10-0-0-1.ec2.internal"


def test_gpu_nodes_are_known_by_gpu_feature_discovery_or_capacity():
    assert nodes.has_gpus(a_node(labels={"nvidia.com/gpu.present": "true"}))
    assert nodes.has_gpus(a_node(labels={"nvidia.com/gpu.count": "8"}))
    gone = a_node()
    gone["status"] = {"capacity": {"nvidia.com/gpu": "8"}}
    assert nodes.has_gpus(gone)
    assert not nodes.has_gpus(a_node(labels={"nvidia.com/gpu.count": "zero"}))
    assert not nodes.has_gpus(a_node(labels={"team": "web"}))
