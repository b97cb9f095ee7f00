"""deploy/gpu-stack/: the Helm values that let the GPU stack (the GPU Operator's DaemonSets, node
feature discovery, the device plugin and GPU feature discovery) run on a node that joins with the
preflight taint, and stay on one the remediator took out. Each list of tolerations is where its
chart reads it, valid as a Pod's tolerations for Kubernetes 1.30 to 1.33, and tolerates the taints
deploy/ declares (the preflight DaemonSet's toleration, which the code's default agrees with) and
the chart's own default it replaces (nvidia.com/gpu)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness.kube.node import Marks
from tests import admission

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "deploy" / "gpu-stack"
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0"]
GPU_TAINT = ("nvidia.com/gpu", "NoSchedule")
"""Every chart's default toleration, which a list of ours replaces."""

WHERE = {
    "gpu-operator.values.yaml": [("daemonsets", "tolerations"), ("node-feature-discovery", "worker", "tolerations")],
    "node-feature-discovery.values.yaml": [("worker", "tolerations")],
    "nvidia-device-plugin.values.yaml": [("tolerations",), ("nfd", "worker", "tolerations")],
}
"""Each values file: the paths its chart reads tolerations from (ClusterPolicy daemonsets.tolerations,
which covers GPU feature discovery too; the NFD worker; the device plugin and its GFD)."""

LISTS = [pytest.param(name, path, id=f"{name}: {'.'.join(path)}") for name, paths in WHERE.items() for path in paths]


def values(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((STACK / name).read_text()))


def tolerations_at(name: str, path: tuple[str, ...]) -> list[dict[str, Any]]:
    found: Any = values(name)
    for key in path:
        assert isinstance(found, dict) and key in found, f"{name}: no {'.'.join(path)}"
        found = found[key]
    assert isinstance(found, list) and found, f"{name}: {'.'.join(path)} is not a list of tolerations"
    return found


def tolerates(toleration: dict[str, Any], key: str, effect: str, value: str = "") -> bool:
    """As the scheduler decides (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
    if toleration.get("effect") and toleration["effect"] != effect:
        return False
    if toleration.get("key", "") not in ("", key):
        return False
    operator = toleration.get("operator", "Equal")
    if not toleration.get("key") and operator != "Exists":
        return False
    return operator == "Exists" or toleration.get("value", "") == value


@pytest.fixture(scope="module")
def declared_taints() -> set[tuple[str, str]]:
    """The taints gpu-burnin sets, as deploy/ declares them: the preflight DaemonSet tolerates the one new
    nodes join with; the remediator adds the code's unhealthy taint (harness.kube.node.Marks)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize`")
    docs = admission.render()
    (preflight,) = [
        d
        for d in docs
        if d["kind"] == "DaemonSet" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "preflight"
    ]
    ours = {
        (t["key"], t["effect"])
        for t in preflight["spec"]["template"]["spec"]["tolerations"]
        if t["key"] != GPU_TAINT[0]
    }
    marks = Marks()
    assert ours == {(marks.preflight_taint.key, marks.preflight_taint.effect)}, "deploy/ and the code disagree"
    return {*ours, (marks.unhealthy_taint.key, marks.unhealthy_taint.effect)}


def test_every_values_file_in_gpu_stack_is_checked():
    assert sorted(p.name for p in STACK.glob("*.yaml")) == sorted(WHERE)


@pytest.mark.parametrize(("name", "path"), LISTS)
def test_each_list_tolerates_the_taints_gpu_burnin_sets_and_the_gpu_taint(declared_taints, name, path):
    tolerations = tolerations_at(name, path)
    for key, effect in sorted({*declared_taints, GPU_TAINT}):
        assert any(tolerates(t, key, effect) for t in tolerations), f"{name} {'.'.join(path)}: not {key}:{effect}"


@pytest.mark.parametrize(("name", "path"), LISTS)
def test_each_list_tolerates_no_more_than_noschedule_of_named_keys(name, path):
    """No blanket toleration: the stack must still leave a node another team tainted NoExecute."""
    for toleration in tolerations_at(name, path):
        assert toleration.get("key"), f"{name}: a toleration without a key tolerates every taint: {toleration}"
        assert toleration.get("effect", "NoSchedule") == "NoSchedule" or toleration["key"] == "CriticalAddonsOnly"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("name", "path"), LISTS)
def test_each_list_is_valid_as_a_pods_tolerations(name, path, version):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": tolerations_at(name, path)},
    }
    assert kubernetes_validate.validate(pod, version, strict=True) == version.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        ({"key": "gpu-burnin/preflight", "operator": "Exists", "effect": "NoSchedule"}, "gpu-burnin/preflight", True),
        ({"key": "gpu-burnin/preflight", "operator": "Exists"}, "gpu-burnin/preflight", True),
        ({"key": "gpu-burnin/preflight", "effect": "NoSchedule"}, "gpu-burnin/preflight", True),  # Equal, value ""
        ({"key": "gpu-burnin/preflight", "value": "x", "effect": "NoSchedule"}, "gpu-burnin/preflight", False),
        ({"key": "gpu-burnin/preflight", "operator": "Exists", "effect": "NoExecute"}, "gpu-burnin/preflight", False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, "gpu-burnin/preflight", False),
        ({"operator": "Exists"}, "gpu-burnin/preflight", True),
    ],
)
def test_tolerates_reads_a_toleration_as_the_scheduler_does(toleration, taint, expected):
    assert tolerates(toleration, taint, "NoSchedule") is expected
