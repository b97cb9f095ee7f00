"""deploy/: the manifests as `kubectl kustomize deploy/` renders them, checked against the
Kubernetes API schemas, held to what the node lifecycle relies on, and the admission
policy's CEL run (with cel-python) against requests it must allow and deny."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel

REPO = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl")
if KUBECTL is None:
    pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize deploy/`", allow_module_level=True)

KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0"]
NAMESPACE = "gpu-burnin"
SERVICE_ACCOUNT = "system:serviceaccount:gpu-burnin:gpu-burnin"
IMAGE = "ghcr.io/gpu-burnin/gpu-burnin:0.1.0"
UID = 10001
STATE_DIR = "/var/lib/gpu-burnin"
COMMON_ARGS = [
    "--baseline-dir",
    "/etc/gpu-burnin/baselines",
    "--results",
    "/var/lib/gpu-burnin/results",
    "--metrics-textfile",
    "/var/lib/gpu-burnin/metrics/gpu-burnin.prom",
]
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "deploy")], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    # kustomize warns on stderr about deprecated fields; the render must not need any.
    assert done.stderr == ""
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name} in the render"
    return found[0]


def generated(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ConfigMap kustomize generated as `name`, under its hashed name."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(f"{name}-")]
    assert len(found) == 1, f"{len(found)} ConfigMaps generated from {name}"
    return found[0]


def pod_of(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    if kind == "DaemonSet":
        return one(docs, "DaemonSet", "gpu-burnin-preflight")["spec"]["template"]["spec"]
    return one(docs, "CronJob", "gpu-burnin-periodic")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def tolerated(pod: dict[str, Any]) -> set[tuple[str, str]]:
    tolerations = pod.get("tolerations", [])
    # A toleration without a key tolerates every taint, gpu-burnin/unhealthy included.
    assert all(t.get("key") for t in tolerations), tolerations
    return {(t["key"], t.get("effect", "")) for t in tolerations}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_api_schemas(rendered, version):
    problems = []
    for obj in rendered:
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            checked = kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            problems.append(f"{what}: {'.'.join(str(p) for p in err.path)}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{what}: {err.message}")
        else:
            # The schema of the version asked for, not an older one it fell back to.
            assert checked == version.rsplit(".", 1)[0], what
    assert not problems, "\n".join(problems)


def test_the_render_holds_each_object_once_and_namespaces_only_the_namespaced(rendered):
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        [*CLUSTER_SCOPED, "ServiceAccount", "DaemonSet", "DaemonSet", "CronJob", "ConfigMap", "ConfigMap"]
    ), kinds
    for obj in rendered:
        namespace = obj["metadata"].get("namespace")
        assert namespace == (None if obj["kind"] in CLUSTER_SCOPED else NAMESPACE), obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "gpu-burnin", obj["metadata"]


def test_the_cluster_role_grants_exactly_what_the_tool_uses(rendered):
    role = one(rendered, "ClusterRole", "gpu-burnin")
    assert "aggregationRule" not in role
    granted = set()
    for rule in role["rules"]:
        # No resourceNames (a node's name is not known in advance) and no nonResourceURLs.
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "patch"),
        ("", "nodes/status", "patch"),
        ("", "events", "create"),
    }


def test_the_role_is_bound_to_the_service_account_the_policy_watches(rendered):
    account = one(rendered, "ServiceAccount", "gpu-burnin")
    binding = one(rendered, "ClusterRoleBinding", "gpu-burnin")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gpu-burnin"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpu-burnin", "namespace": NAMESPACE}]
    assert f"system:serviceaccount:{account['metadata']['namespace']}:gpu-burnin" == SERVICE_ACCOUNT
    for kind in ("DaemonSet", "CronJob"):
        pod = pod_of(rendered, kind)
        assert pod["serviceAccountName"] == "gpu-burnin", kind
        assert pod["automountServiceAccountToken"] is True, kind


@pytest.mark.parametrize(
    ("kind", "variable", "key", "profile"),
    [
        ("DaemonSet", "PREFLIGHT_PROFILE", "preflight-profile", "quick"),
        ("CronJob", "PERIODIC_PROFILE", "periodic-profile", "standard"),
    ],
)
def test_both_pods_get_node_name_profile_state_baselines_and_every_gpu(rendered, kind, variable, key, profile):
    pod = pod_of(rendered, kind)
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert pod["terminationGracePeriodSeconds"] == 60
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # The reference follows the generated (hashed) name, so a new profile rolls the pods.
    config = generated(rendered, "gpu-burnin-config")
    assert env[variable]["valueFrom"] == {"configMapKeyRef": {"name": config["metadata"]["name"], "key": key}}
    assert config["data"][key] == profile
    assert f"$({variable})" in container["args"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state = volumes[mounts[STATE_DIR]["name"]]
    assert state["hostPath"] == {"path": STATE_DIR, "type": "DirectoryOrCreate"}
    baselines = mounts["/etc/gpu-burnin/baselines"]
    assert baselines["readOnly"] is True
    baselines_map = generated(rendered, "gpu-burnin-baselines")
    assert volumes[baselines["name"]]["configMap"] == {"name": baselines_map["metadata"]["name"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]

    gpus = {"nvidia.com/gpu": "8"}
    assert container["resources"]["requests"].items() >= gpus.items()
    assert container["resources"]["limits"].items() >= gpus.items()


@pytest.mark.parametrize("kind", ["DaemonSet", "CronJob"])
def test_both_pods_run_unprivileged_as_the_image_user(rendered, kind):
    pod = pod_of(rendered, kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (UID, UID)
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The one root step: hand the hostPath's directories to the image user, with CAP_CHOWN alone.
    (init,) = pod["initContainers"]
    assert init["image"] == IMAGE
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert f"chown {UID}:{UID}" in init["command"][-1]
    assert "privileged" not in init["securityContext"]


def test_preflight_runs_on_pending_nodes_through_their_taint(rendered):
    daemonset = one(rendered, "DaemonSet", "gpu-burnin-preflight")
    pod = daemonset["spec"]["template"]["spec"]
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert pod["nodeSelector"] == {"gpu-burnin/preflight": "pending"}
    assert tolerated(pod) == {("gpu-burnin/preflight", "NoSchedule"), ("nvidia.com/gpu", "NoSchedule")}
    assert "priorityClassName" not in pod
    (container,) = pod["containers"]
    assert container["args"] == ["preflight", "--stay", "--profile", "$(PREFLIGHT_PROFILE)", *COMMON_ARGS]


def test_periodic_runs_one_bounded_job_at_a_time_on_in_service_nodes_and_yields_to_any_pod(rendered):
    cronjob = one(rendered, "CronJob", "gpu-burnin-periodic")
    assert cronjob["spec"]["schedule"] == "0 */6 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["startingDeadlineSeconds"] > 0
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (0, 3600)
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"

    priority = one(rendered, "PriorityClass", pod["priorityClassName"])
    assert pod["priorityClassName"] == "gpu-burnin-periodic"
    assert priority["preemptionPolicy"] == "Never"
    assert priority["value"] < 0
    assert priority["globalDefault"] is False

    # Never on a node taken out of service or still in preflight.
    assert tolerated(pod) == {("nvidia.com/gpu", "NoSchedule")}
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]},
                {"key": "gpu-burnin/preflight", "operator": "DoesNotExist"},
            ]
        }
    ]
    (container,) = pod["containers"]
    assert container["args"] == [
        "periodic",
        "--profile",
        "$(PERIODIC_PROFILE)",
        *COMMON_ARGS,
        "--gpu-node-selector",
        "nvidia.com/gpu.present=true",
        "--max-unhealthy-share",
        "0.05",
    ]


def test_deploy_baselines_are_the_packaged_baselines_byte_for_byte():
    packaged = {p.name: p.read_bytes() for p in (REPO / "baselines").glob("*.toml")}
    copied = {p.name: p.read_bytes() for p in (REPO / "deploy" / "baselines").glob("*.toml")}
    assert sorted(copied) == sorted(packaged), "deploy/baselines/ must hold a copy of each baselines/*.toml"
    for name, content in packaged.items():
        assert copied[name] == content, f"deploy/baselines/{name} differs from baselines/{name}: copy it again"


def test_the_baselines_config_map_holds_every_baseline(rendered):
    config_map = generated(rendered, "gpu-burnin-baselines")
    assert config_map["data"] == {p.name: p.read_text() for p in (REPO / "baselines").glob("*.toml")}


# The admission policy, evaluated with cel-python as the API server evaluates it: the
# matchConditions first (the policy applies only when all hold), then the variables in
# order, each seeing the ones before it, then every validation.


@pytest.fixture(scope="module")
def policy(rendered) -> dict[str, Any]:
    return one(rendered, "ValidatingAdmissionPolicy", "gpu-burnin-node-changes")


@functools.cache
def program(expression: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def truth(expression: str, activation: dict[str, Any]) -> bool:
    # celpy raises CELEvalError for an expression that fails; that fails the test too.
    result = program(expression).evaluate(activation)
    assert isinstance(result, celtypes.BoolType), f"{expression!r} gave {result!r}, not a bool"
    return bool(result)


def denials(
    policy: dict[str, Any], asked: dict[str, Any], old: dict[str, Any], new: dict[str, Any]
) -> list[str] | None:
    """The messages of the validations that deny the update; None when the policy does not apply."""
    spec = policy["spec"]
    activation: dict[str, Any] = {
        "request": json_to_cel(asked),
        "oldObject": json_to_cel(old),
        "object": json_to_cel(new),
    }
    if not all(truth(condition["expression"], activation) for condition in spec["matchConditions"]):
        return None
    variables = celtypes.MapType()
    for variable in spec["variables"]:
        value = program(variable["expression"]).evaluate({**activation, "variables": variables})
        variables = celtypes.MapType({**variables, celtypes.StringType(variable["name"]): value})
    activation["variables"] = variables
    return [v["message"] for v in spec["validations"] if not truth(v["expression"], activation)]


NODE = "gpu-node-7"
TOKEN_NODE = "authentication.kubernetes.io/node-name"


def request(node: str | None = NODE, *, subresource: str = "", username: str = SERVICE_ACCOUNT) -> dict[str, Any]:
    """An UPDATE of a node as the API server hands it to admission; `node`: the one the token names."""
    extra = {
        "authentication.kubernetes.io/pod-name": ["gpu-burnin-preflight-x7k2p"],
        "authentication.kubernetes.io/pod-uid": ["0b3c6a9e-8f4d-4d3c-9a51-3c2f4b1e7d20"],
    }
    if node is not None:
        extra[TOKEN_NODE] = [node]
    return {
        "operation": "UPDATE",
        "kind": {"group": "", "version": "v1", "kind": "Node"},
        "resource": {"group": "", "version": "v1", "resource": "nodes"},
        "subResource": subresource,
        "name": NODE,
        "userInfo": {
            "username": username,
            "uid": "6f1d2c3b-0000-4000-8000-000000000001",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:gpu-burnin", "system:authenticated"],
            "extra": extra,
        },
    }


def in_preflight() -> dict[str, Any]:
    """A GPU node as the API server holds it while preflight burns it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "labels": {
                "kubernetes.io/hostname": NODE,
                "nvidia.com/gpu.present": "true",
                "gpu-burnin/preflight": "pending",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": "10.244.7.0/24",
            "podCIDRs": ["10.244.7.0/24"],
            "providerID": "aws:///us-east-1a/i-0123456789abcdef0",
            "taints": [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                {"key": "gpu-burnin/preflight", "value": "pending", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "training", "effect": "NoSchedule"},
            ],
        },
        "status": {
            "capacity": {"cpu": "192", "memory": "2113389992Ki", "nvidia.com/gpu": "8"},
            "allocatable": {"cpu": "191", "memory": "2112341416Ki", "nvidia.com/gpu": "8"},
            "addresses": [{"type": "InternalIP", "address": "10.0.7.7"}, {"type": "Hostname", "address": NODE}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "conditions": [
                {
                    "type": "MemoryPressure",
                    "status": "False",
                    "reason": "KubeletHasSufficientMemory",
                    "lastHeartbeatTime": "2026-11-28T05:00:00Z",
                    "lastTransitionTime": "2026-11-28T04:00:00Z",
                },
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": "2026-11-28T05:00:00Z",
                    "lastTransitionTime": "2026-11-28T04:00:00Z",
                },
            ],
        },
    }


def passes_preflight(node: dict[str, Any]) -> None:
    node["spec"]["taints"] = [t for t in node["spec"]["taints"] if t["key"] != "gpu-burnin/preflight"]
    del node["metadata"]["labels"]["gpu-burnin/preflight"]
    node["metadata"]["annotations"]["gpu-burnin/last-result"] = "pass 2026-11-28T05:10:00Z"


def fails_periodic(node: dict[str, Any]) -> None:
    node["spec"]["taints"].append({"key": "gpu-burnin/unhealthy", "value": "matmul", "effect": "NoSchedule"})
    node["spec"]["unschedulable"] = True
    node["metadata"]["labels"]["gpu-burnin/health"] = "unhealthy"
    node["metadata"]["annotations"]["gpu-burnin/cordoned"] = "true"
    node["metadata"]["annotations"]["gpu-burnin/last-result"] = "fail 2026-11-28T11:10:00Z"


def burn_in_condition(status: str) -> dict[str, Any]:
    return {
        "type": "GPUBurnIn",
        "status": status,
        "reason": "Passed" if status == "True" else "Failed",
        "message": "gpu-burnin verdict",
        "lastHeartbeatTime": "2026-11-28T05:10:00Z",
        "lastTransitionTime": "2026-11-28T05:10:00Z",
    }


def in_service() -> dict[str, Any]:
    node = in_preflight()
    passes_preflight(node)
    node["status"]["conditions"].append(burn_in_condition("True"))
    return node


def bare() -> dict[str, Any]:
    """A node with no labels, annotations, taints or conditions at all."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}, "spec": {}, "status": {}}


def changed(old: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    new = copy.deepcopy(old)
    edit(new)
    return new


def set_condition(node: dict[str, Any], condition: dict[str, Any]) -> None:
    node["status"]["conditions"] = [c for c in node["status"]["conditions"] if c["type"] != condition["type"]]
    node["status"]["conditions"].append(condition)


ALLOWED = [
    pytest.param(in_preflight, passes_preflight, "", id="preflight passes: its taint and label go, the others stay"),
    pytest.param(in_service, fails_periodic, "", id="periodic fails: unhealthy taint and label, cordon, annotations"),
    pytest.param(
        in_preflight,
        lambda n: set_condition(n, burn_in_condition("True")),
        "status",
        id="the GPUBurnIn condition is added through status, Ready unchanged",
    ),
    pytest.param(
        in_service,
        lambda n: set_condition(n, burn_in_condition("False")),
        "status",
        id="the GPUBurnIn condition changes",
    ),
    pytest.param(
        in_service,
        lambda n: set_condition(n, {**burn_in_condition("False"), "type": "GPUBurnInWatch", "reason": "XID"}),
        "status",
        id="the watch's GPUBurnInWatch condition is set",
    ),
    pytest.param(
        bare,
        lambda n: n["metadata"].update(labels={"gpu-burnin/preflight": "failed"}),
        "",
        id="a node without labels, annotations or taints gets a gpu-burnin label",
    ),
    pytest.param(
        bare,
        lambda n: n["spec"].update(taints=[{"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"}]),
        "",
        id="a node without taints gets a gpu-burnin taint",
    ),
]


@pytest.mark.parametrize(("node", "edit", "subresource"), ALLOWED)
def test_the_policy_allows_the_tool_its_own_keys_on_its_own_node(policy, node, edit, subresource):
    old = node()
    assert denials(policy, request(subresource=subresource), old, changed(old, edit)) == []


def taint(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda n: next(t for t in n["spec"]["taints"] if t["key"] == key)


def condition(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda n: next(c for c in n["status"]["conditions"] if c["type"] == kind)


ANOTHER_NODE = "only the node its pod runs on"
TAINTS = "only taints whose key starts with gpu-burnin/"
LABELS = "only labels whose key starts with gpu-burnin/"
ANNOTATIONS = "only annotations whose key starts with gpu-burnin/"
CONDITIONS = "only the GPUBurnIn and GPUBurnInWatch node conditions"
SPEC = "only spec.unschedulable and its own taints"
STATUS = "status.capacity, status.allocatable"

DENIED = [
    pytest.param(request("gpu-node-8"), passes_preflight, ANOTHER_NODE, id="the token names another node"),
    pytest.param(request(None), passes_preflight, ANOTHER_NODE, id="the token names no node"),
    pytest.param(
        {**request(None), "userInfo": {"username": SERVICE_ACCOUNT}},
        passes_preflight,
        ANOTHER_NODE,
        id="the request has no extra at all",
    ),
    pytest.param(
        {**request(None), "userInfo": {"username": SERVICE_ACCOUNT, "extra": {TOKEN_NODE: []}}},
        passes_preflight,
        ANOTHER_NODE,
        id="the token's node list is empty",
    ),
    pytest.param(
        request(),
        lambda n: n["spec"].update(taints=[taint("gpu-burnin/preflight")(n), taint("dedicated")(n)]),
        TAINTS,
        id="removes the nvidia.com/gpu taint",
    ),
    pytest.param(
        request(), lambda n: taint("nvidia.com/gpu")(n).update(effect="NoExecute"), TAINTS, id="changes a taint"
    ),
    pytest.param(
        request(),
        lambda n: n["spec"]["taints"].append({"key": "maintenance", "effect": "NoSchedule"}),
        TAINTS,
        id="adds a taint of another key",
    ),
    pytest.param(request(), lambda n: n["spec"]["taints"].reverse(), TAINTS, id="reorders the other taints"),
    pytest.param(request(), lambda n: n["spec"].pop("taints"), TAINTS, id="removes every taint"),
    pytest.param(
        request(), lambda n: n["metadata"]["labels"].pop("kubernetes.io/hostname"), LABELS, id="removes another label"
    ),
    pytest.param(
        request(),
        lambda n: n["metadata"]["labels"].update({"nvidia.com/gpu.present": "false"}),
        LABELS,
        id="changes a label",
    ),
    pytest.param(
        request(),
        lambda n: n["metadata"]["labels"].update({"node-role.kubernetes.io/gpu": ""}),
        LABELS,
        id="adds a label",
    ),
    pytest.param(
        request(),
        lambda n: n["metadata"]["annotations"].pop("node.alpha.kubernetes.io/ttl"),
        ANNOTATIONS,
        id="removes another annotation",
    ),
    pytest.param(
        request(),
        lambda n: n["metadata"]["annotations"].update({"node.alpha.kubernetes.io/ttl": "30"}),
        ANNOTATIONS,
        id="changes an annotation",
    ),
    pytest.param(
        request(), lambda n: n["metadata"]["annotations"].update({"owner": "me"}), ANNOTATIONS, id="adds an annotation"
    ),
    pytest.param(
        request(subresource="status"),
        lambda n: condition("Ready")(n).update(status="False", reason="gpu-burnin"),
        CONDITIONS,
        id="changes the Ready condition",
    ),
    pytest.param(
        request(subresource="status"),
        lambda n: n["status"].update(conditions=[c for c in n["status"]["conditions"] if c["type"] != "Ready"]),
        CONDITIONS,
        id="removes the Ready condition",
    ),
    pytest.param(
        request(subresource="status"),
        lambda n: n["status"]["conditions"].append({"type": "GPUHealthy", "status": "True"}),
        CONDITIONS,
        id="adds another condition",
    ),
    pytest.param(
        request(), lambda n: n["spec"].update(providerID="aws:///us-east-1a/i-0fffffffffffffff0"), SPEC, id="providerID"
    ),
    pytest.param(request(), lambda n: n["spec"].update(podCIDR="10.244.8.0/24"), SPEC, id="podCIDR"),
    pytest.param(request(), lambda n: n["spec"]["podCIDRs"].append("fd00:7::/64"), SPEC, id="podCIDRs"),
    pytest.param(request(), lambda n: n["spec"].update(externalID="i-0123"), SPEC, id="externalID"),
    pytest.param(
        request(),
        lambda n: n["spec"].update(
            configSource={"configMap": {"name": "k", "namespace": "kube-system", "kubeletConfigKey": "kubelet"}}
        ),
        SPEC,
        id="configSource",
    ),
    pytest.param(
        request(subresource="status"),
        lambda n: n["status"]["allocatable"].update({"nvidia.com/gpu": "0"}),
        STATUS,
        id="allocatable GPUs",
    ),
    pytest.param(
        request(subresource="status"),
        lambda n: n["status"]["addresses"][0].update(address="192.0.2.1"),
        STATUS,
        id="the kubelet's address",
    ),
    pytest.param(
        request(subresource="status"),
        lambda n: n["status"]["daemonEndpoints"]["kubeletEndpoint"].update(Port=10255),
        STATUS,
        id="the kubelet's port",
    ),
]


@pytest.mark.parametrize(("asked", "edit", "reason"), DENIED)
def test_the_policy_denies_anything_else(policy, asked, edit, reason):
    old = in_preflight()
    found = denials(policy, asked, old, changed(old, edit))
    assert found is not None and len(found) == 1 and reason in found[0], found


@pytest.mark.parametrize(
    "username",
    ["system:node:gpu-node-7", "system:serviceaccount:other:gpu-burnin", "system:serviceaccount:gpu-burnin:default"],
)
def test_the_policy_leaves_everyone_else_alone(policy, username):
    old = in_preflight()
    assert denials(policy, request(username=username), old, changed(old, lambda n: n["spec"].pop("taints"))) is None


def test_the_policy_fails_closed_on_node_updates_and_is_bound_to_deny(rendered, policy):
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes", "nodes/status"]}
    ]
    assert all(v["message"] and v["reason"] == "Forbidden" for v in spec["validations"])
    binding = one(rendered, "ValidatingAdmissionPolicyBinding", "gpu-burnin-node-changes")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


# The passive health watch (deploy/watch-daemonset.yaml) and its optional eviction component
# (deploy/watch-eviction), rendered as a site's overlay would use it.

WATCH_ARGS = [
    "watch",
    "--baseline-dir",
    "/etc/gpu-burnin/baselines",
    "--journal",
    "/var/lib/gpu-burnin/watch/journal.jsonl",
    "--metrics-textfile",
    "/var/lib/gpu-burnin/metrics/gpu-burnin-watch.prom",
    "--gpu-node-selector",
    "nvidia.com/gpu.present=true",
    "--max-unhealthy-share",
    "0.05",
]


def watch_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "DaemonSet", "gpu-burnin-watch")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def with_eviction(tmp_path_factory) -> list[dict[str, Any]]:
    """deploy/ with deploy/watch-eviction, from an overlay outside deploy/ (kustomize refuses one inside)."""
    overlay = tmp_path_factory.mktemp("overlay")
    deploy = Path(os.path.relpath(REPO / "deploy", overlay))
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {deploy}\ncomponents:\n  - {deploy / 'watch-eviction'}\n"
    )
    done = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_the_watch_runs_on_every_gpu_node_through_every_taint_this_tool_sets(rendered):
    daemonset = one(rendered, "DaemonSet", "gpu-burnin-watch")
    pod = watch_pod(rendered)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # in service or not, preflight or not
    assert tolerated(pod) == {
        ("gpu-burnin/preflight", "NoSchedule"),
        ("gpu-burnin/unhealthy", "NoSchedule"),
        ("nvidia.com/gpu", "NoSchedule"),
    }
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert pod["serviceAccountName"] == "gpu-burnin" and pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == WATCH_ARGS


def test_the_watch_requests_no_gpu_but_sees_them_all_within_cpu_and_memory_limits(rendered):
    (container,) = watch_pod(rendered)["containers"]
    resources = container["resources"]
    assert not any("nvidia.com" in key for part in resources.values() for key in part)
    assert {"cpu", "memory"} <= set(resources["limits"]) and {"cpu", "memory"} <= set(resources["requests"])
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"  # NVML, nothing to compute with
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_the_watch_runs_unprivileged_with_its_journal_on_the_node(rendered):
    pod = watch_pod(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert "/var/lib/gpu-burnin/watch" in init["command"][-1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts[STATE_DIR]["name"]]["hostPath"] == {"path": STATE_DIR, "type": "DirectoryOrCreate"}
    baselines_map = generated(rendered, "gpu-burnin-baselines")
    assert volumes[mounts["/etc/gpu-burnin/baselines"]["name"]]["configMap"] == {
        "name": baselines_map["metadata"]["name"]
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_with_eviction_every_object_validates(with_eviction, version):
    for obj in with_eviction:
        assert kubernetes_validate.validate(obj, version, strict=True) == version.rsplit(".", 1)[0]


def test_eviction_is_granted_only_by_its_component(rendered, with_eviction):
    def granted(docs):
        return {
            (g, r, v)
            for role in docs
            if role["kind"] == "ClusterRole"
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    assert not any(r.startswith("pods") for _, r, _ in granted(rendered))
    assert granted(with_eviction) - granted(rendered) == {("", "pods", "list"), ("", "pods/eviction", "create")}
    binding = one(with_eviction, "ClusterRoleBinding", "gpu-burnin-eviction")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpu-burnin", "namespace": NAMESPACE}]
    assert watch_pod(with_eviction)["containers"][0]["args"] == [*WATCH_ARGS, "--on-critical", "evict"]
    assert watch_pod(rendered)["containers"][0]["args"] == WATCH_ARGS  # the base only cordons
    for obj in with_eviction:
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in CLUSTER_SCOPED else NAMESPACE)
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "gpu-burnin"


def eviction_denials(policy: dict[str, Any], asked: dict[str, Any], eviction: dict[str, Any]) -> list[str] | None:
    spec = policy["spec"]
    activation: dict[str, Any] = {"request": json_to_cel(asked), "object": json_to_cel(eviction)}
    if not all(truth(c["expression"], activation) for c in spec["matchConditions"]):
        return None
    return [v["message"] for v in spec["validations"] if not truth(v["expression"], activation)]


def eviction(**delete_options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "train-0", "namespace": "ml"},
    }
    if delete_options:
        body["deleteOptions"] = delete_options
    return body


def test_the_eviction_policy_wants_a_node_bound_token_and_the_pods_own_grace_period(with_eviction):
    policy = one(with_eviction, "ValidatingAdmissionPolicy", "gpu-burnin-evictions")
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/eviction"]}
    ]
    binding = one(with_eviction, "ValidatingAdmissionPolicyBinding", "gpu-burnin-evictions")
    assert binding["spec"] == {"policyName": "gpu-burnin-evictions", "validationActions": ["Deny"]}
    assert eviction_denials(policy, request(), eviction()) == []
    assert eviction_denials(policy, request(), eviction(propagationPolicy="Background")) == []
    (why,) = eviction_denials(policy, request(None), eviction())
    assert "bound to a node" in why
    (why,) = eviction_denials(policy, request(), eviction(gracePeriodSeconds=0))
    assert "their own grace period" in why
    (why,) = eviction_denials(policy, request(), eviction(dryRun=["All"]))
    assert "no dryRun" in why
    other = request(username="system:serviceaccount:kube-system:generic-garbage-collector")
    assert eviction_denials(policy, other, eviction(gracePeriodSeconds=0)) is None
