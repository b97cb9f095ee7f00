"""deploy/: the manifests as `kubectl kustomize deploy/` renders them, checked against the
Kubernetes API schemas, held to what the node lifecycle relies on, and their RBAC listed per
account as `kubectl auth can-i --list` would: no pod on a GPU node holds anything beyond its
own node. The admission policies' CEL is run in tests/test_admission.py."""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests import admission
from tests.admission import Grant

REPO = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl")
if KUBECTL is None:
    pytest.skip("kubectl is not on PATH: deploy/ is rendered with `kubectl kustomize deploy/`", allow_module_level=True)

KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0"]
NAMESPACE = "gpu-burnin"
IMAGE = "ghcr.io/gpu-burnin/gpu-burnin:0.1.0"
SLIM_IMAGE = "ghcr.io/gpu-burnin/gpu-burnin-slim:0.1.0"
"""The watch's and the remediator's: no torch (images/Dockerfile.slim)."""
UID = 10001
LOCKED_DOWN = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
"""What every long-running container of ours runs as: the image user, nothing to gain, nothing written."""
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
BRAKE_FLAGS = {"--max-unhealthy-share", "--max-unhealthy-nodes", "--gpu-node-selector"}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return admission.render()


@pytest.fixture(scope="module", params=list(admission.RENDERS), ids=list(admission.RENDERS))
def any_render(request) -> list[dict[str, Any]]:
    """deploy/ and the overlays that rename everything in it (tests/data/kustomize/)."""
    return admission.render(admission.RENDERS[request.param])


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


def workloads(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (workload, its pod spec) in the render."""
    found = []
    for doc in docs:
        if doc["kind"] == "CronJob":
            found.append((doc, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif doc["kind"] in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
            found.append((doc, doc["spec"]["template"]["spec"]))
    return found


def on_gpu_nodes(pod: dict[str, Any]) -> bool:
    """Whether the scheduler may place this pod on a GPU node: unless it is kept off them."""
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = required["nodeSelectorTerms"] if required else [{}]
    kept_off = all(
        {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in term.get("matchExpressions", [])
        for term in terms
    )
    return not kept_off


def account(workload: dict[str, Any], pod: dict[str, Any]) -> tuple[str, str]:
    """(user name, namespace) of the service account the pod runs as."""
    namespace = workload["metadata"]["namespace"]
    return admission.service_account(namespace, pod.get("serviceAccountName", "default")), namespace


def tolerated(pod: dict[str, Any]) -> set[tuple[str, str]]:
    tolerations = pod.get("tolerations", [])
    # A toleration without a key tolerates every taint, gpu-burnin/unhealthy included.
    assert all(t.get("key") for t in tolerations), tolerations
    return {(t["key"], t.get("effect", "")) for t in tolerations}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_api_schemas(any_render, version):
    problems = []
    for obj in any_render:
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
        [
            *CLUSTER_SCOPED,
            *["ClusterRole", "ClusterRoleBinding"] * 3,  # one of each per component
            *["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 4,  # per component, and events
            *["ServiceAccount"] * 4,
            *["Role", "RoleBinding"] * 2,
            "PriorityClass",  # the watch's, beside the periodic one
            *["DaemonSet", "DaemonSet", "CronJob", "Deployment", "PodDisruptionBudget", "Service"],
            *["ConfigMap", "ConfigMap"],
        ]
    ), kinds
    for obj in rendered:
        namespace = obj["metadata"].get("namespace")
        assert namespace == (None if obj["kind"] in CLUSTER_SCOPED else NAMESPACE), obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "gpu-burnin", obj["metadata"]


def test_deploy_has_no_optional_eviction_for_pods_on_gpu_nodes():
    """Evicting is the remediator's alone; the component that gave it to the watch is gone."""
    assert not (REPO / "deploy" / "watch-eviction").exists()


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
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
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
    assert container["securityContext"] == LOCKED_DOWN
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
    assert pod["nodeSelector"] == {"gpu-burnin/preflight": "pending"}
    assert tolerated(pod) == {("gpu-burnin/preflight", "NoSchedule"), ("nvidia.com/gpu", "NoSchedule")}
    assert "priorityClassName" not in pod
    (container,) = pod["containers"]
    assert container["args"] == ["preflight", "--stay", "--profile", "$(PREFLIGHT_PROFILE)", *COMMON_ARGS]


def periodic_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The periodic CronJob's Job spec, whatever an overlay named the CronJob."""
    (cronjob,) = [d for d in docs if d["kind"] == "CronJob"]
    return dict(cronjob["spec"]["jobTemplate"]["spec"])


def test_a_preflight_rollout_restarts_no_burn_in_flight(any_render):
    """A new baseline or profile changes the pod template (the ConfigMaps' hashed names): with
    OnDelete each pod is replaced only when its node leaves preflight."""
    (daemonset,) = [
        d
        for d in any_render
        if d["kind"] == "DaemonSet" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "preflight"
    ]
    assert daemonset["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_periodic_runs_one_bounded_job_at_a_time_on_in_service_nodes_and_yields_to_any_pod(rendered):
    cronjob = one(rendered, "CronJob", "gpu-burnin-periodic")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["startingDeadlineSeconds"] > 0
    pod = periodic_job(rendered)["template"]["spec"]
    assert pod["restartPolicy"] == "Never"

    priority = one(rendered, "PriorityClass", pod["priorityClassName"])
    assert pod["priorityClassName"] == "gpu-burnin-periodic"
    assert priority["preemptionPolicy"] == "Never"
    assert priority["value"] < 0
    assert priority["globalDefault"] is False

    # Never on a node taken out of service or still in preflight.
    assert tolerated(pod) == {("nvidia.com/gpu", "NoSchedule")}
    (container,) = pod["containers"]
    assert container["args"] == [
        "periodic",
        "--profile",
        "$(PERIODIC_PROFILE)",
        *COMMON_ARGS,
    ]


def test_periodic_pods_land_only_on_in_service_nodes_not_tested_lately(rendered):
    """The watch keeps gpu-burnin/fresh on a node whose last result is recent: the pods require it absent."""
    pod = periodic_job(rendered)["template"]["spec"]
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]},
                {"key": "gpu-burnin/preflight", "operator": "DoesNotExist"},
                {"key": "gpu-burnin/fresh", "operator": "DoesNotExist"},
                {"key": "gpu-burnin/health", "operator": "DoesNotExist"},
            ]
        }
    ]


def test_periodic_pods_of_a_job_land_on_distinct_nodes(any_render):
    job = periodic_job(any_render)
    assert job["parallelism"] > 1
    labels = job["template"]["metadata"]["labels"]
    (term,) = job["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    selector = term["labelSelector"]["matchLabels"]
    # The selector matches the pods themselves (whatever an overlay renamed), and only them.
    assert selector.items() <= labels.items()
    assert selector["app.kubernetes.io/component"] == "periodic"
    assert "namespaces" not in term and "namespaceSelector" not in term  # the pods' own namespace


def test_a_periodic_pod_that_finds_no_free_node_leaves_with_its_job_before_the_next_tick(rendered):
    """The Job's deadline counts Pending time (the pod's own counts from the kubelet's start): it ends
    every pod, landed or not, before the next tick; a pod that lands early enough gets its whole run."""
    from bench import coverage

    cronjob = one(rendered, "CronJob", "gpu-burnin-periodic")
    job = periodic_job(rendered)
    pod = job["template"]["spec"]
    ticks = coverage.ticks_of_day(cronjob["spec"]["schedule"])
    gaps = [(b - a) % coverage.DAY_MIN or coverage.DAY_MIN for a, b in zip(ticks, [*ticks[1:], ticks[0]], strict=True)]
    assert job["activeDeadlineSeconds"] < min(gaps) * 60, "a Job still running at the next tick skips it (Forbid)"
    assert 0 < pod["activeDeadlineSeconds"] < job["activeDeadlineSeconds"]
    # Quiet: the Job's status is not where verdicts live; a Job that ended Failed is not kept.
    assert cronjob["spec"]["failedJobsHistoryLimit"] == 0


def test_one_periodic_run_neither_fails_nor_retries_the_others(rendered):
    """A failing node (exit 1) or an incomplete run (exit 2) ends its own index only; a preempted pod
    (DisruptionTarget) is not a finding, and its index tries another free node."""
    job = periodic_job(rendered)
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"]
    assert job["backoffLimitPerIndex"] == 0
    assert job["maxFailedIndexes"] == job["completions"]
    assert "backoffLimit" not in job
    assert job["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]


def test_the_shipped_periodic_shape_is_what_the_coverage_simulation_reads(rendered):
    from bench import coverage

    cronjob = one(rendered, "CronJob", "gpu-burnin-periodic")
    job = periodic_job(rendered)
    assert coverage.shipped() == coverage.Shape(
        schedule=cronjob["spec"]["schedule"],
        parallelism=job["parallelism"],
        job_deadline_s=job["activeDeadlineSeconds"],
        run_deadline_s=job["template"]["spec"]["activeDeadlineSeconds"],
    )


def test_deploy_baselines_are_the_packaged_baselines_byte_for_byte():
    packaged = {p.name: p.read_bytes() for p in (REPO / "baselines").glob("*.toml")}
    copied = {p.name: p.read_bytes() for p in (REPO / "deploy" / "baselines").glob("*.toml")}
    assert sorted(copied) == sorted(packaged), "deploy/baselines/ must hold a copy of each baselines/*.toml"
    for name, content in packaged.items():
        assert copied[name] == content, f"deploy/baselines/{name} differs from baselines/{name}: copy it again"


def test_the_baselines_config_map_holds_every_baseline(rendered):
    config_map = generated(rendered, "gpu-burnin-baselines")
    assert config_map["data"] == {p.name: p.read_text() for p in (REPO / "baselines").glob("*.toml")}


# The passive health watch (deploy/watch-daemonset.yaml).

WATCH_ARGS = [
    "watch",
    "--baseline-dir",
    "/etc/gpu-burnin/baselines",
    "--journal",
    "/var/lib/gpu-burnin/watch/journal.jsonl",
    "--metrics-textfile",
    "/var/lib/gpu-burnin/metrics/gpu-burnin-watch.prom",
]


def watch_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "DaemonSet", "gpu-burnin-watch")["spec"]["template"]["spec"]


def test_the_watch_runs_on_every_gpu_node_through_every_taint_this_tool_sets(rendered):
    daemonset = one(rendered, "DaemonSet", "gpu-burnin-watch")
    pod = watch_pod(rendered)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}  # in service or not, preflight or not
    # Every taint, of any key and effect: a node agent that a taint evicts stops watching the nodes in trouble.
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert pod["serviceAccountName"] == "watch" and pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["image"] == SLIM_IMAGE
    assert container["args"] == WATCH_ARGS


def test_the_watch_preempts_ordinary_pods_to_run_and_is_preempted_by_none(any_render):
    """A node agent must not stay Pending on a full node; system-*-critical stays the cluster's own."""
    (daemonset,) = [
        d
        for d in any_render
        if d["kind"] == "DaemonSet" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "watch"
    ]
    pod = daemonset["spec"]["template"]["spec"]
    priority = one(any_render, "PriorityClass", pod["priorityClassName"])
    assert 0 < priority["value"] < 2_000_000_000  # above every default pod, below system-cluster-critical
    assert priority.get("preemptionPolicy", "PreemptLowerPriority") == "PreemptLowerPriority"
    assert priority["globalDefault"] is False
    periodic = [d for d in any_render if d["kind"] == "PriorityClass" and d["value"] < 0]
    assert len(periodic) == 1 and periodic[0]["metadata"]["name"] != pod["priorityClassName"]


def test_a_watch_rollout_stops_on_pods_that_do_not_poll(rendered):
    """Ready means a poll younger than 120 s (gpu-burnin watch-ready); a new pod counts as available
    only after minReadySeconds, so a roll-out of a crash-looping or stuck watch stops at its first batch."""
    daemonset = one(rendered, "DaemonSet", "gpu-burnin-watch")
    spec = daemonset["spec"]
    assert spec["minReadySeconds"] >= 60
    unavailable = spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"]
    assert isinstance(unavailable, str) and unavailable.endswith("%") and 0 < int(unavailable[:-1]) <= 10
    (container,) = spec["template"]["spec"]["containers"]
    probe = container["readinessProbe"]
    assert probe["exec"]["command"] == ["gpu-burnin", "watch-ready", "--max-age", "120"]
    # The watch polls every 30 s (--interval's default): two failed probes, a minute, before it is unready.
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 120
    assert probe["timeoutSeconds"] < probe["periodSeconds"]
    # No liveness probe: a restart cannot cure a wedged NVML, and a container may not start on a GPU in error.
    assert "livenessProbe" not in container


def test_the_watch_requests_no_gpu_but_sees_them_all_within_cpu_and_memory_limits(rendered):
    (container,) = watch_pod(rendered)["containers"]
    resources = container["resources"]
    assert not any("nvidia.com" in key for part in resources.values() for key in part)
    assert {"cpu", "memory"} <= set(resources["limits"]) and {"cpu", "memory"} <= set(resources["requests"])
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"  # NVML, nothing to compute with
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_the_watch_runs_unprivileged_with_its_journal_on_the_node(rendered):
    pod = watch_pod(rendered)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"] == LOCKED_DOWN
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


# Who may do what (docs/kubernetes.md): each account's permissions, listed from the rendered
# RBAC as `kubectl auth can-i --list --as system:serviceaccount:<namespace>:<name>` would.

NODE_AGENT_MAY = {
    Grant("", "", "nodes", "get"),
    Grant("", "", "nodes", "patch"),
    Grant("", "", "nodes/status", "patch"),
}
"""Cluster-wide: its own node, which the admission policies confine it to; plus, per component,
events in its namespace and its own verb on gpu-burnin.dev/nodemarks."""


def node_agent_may(namespace: str, component: str) -> set[Grant]:
    return {
        *NODE_AGENT_MAY,
        Grant(namespace, "", "events", "create"),
        Grant("", "gpu-burnin.dev", "nodemarks", f"as-{component}"),
    }


def remediator_may(namespace: str) -> set[Grant]:
    return {
        Grant("", "", "nodes", "get"),
        Grant("", "", "nodes", "list"),
        Grant("", "", "nodes", "watch"),
        Grant("", "", "nodes", "patch"),
        Grant("", "", "nodes/status", "patch"),
        Grant("", "", "pods", "get"),
        Grant("", "", "pods", "list"),
        Grant("", "", "pods/eviction", "create"),
        Grant(namespace, "coordination.k8s.io", "leases", "get"),
        Grant(namespace, "coordination.k8s.io", "leases", "create"),
        Grant(namespace, "coordination.k8s.io", "leases", "update"),
        Grant(namespace, "", "events", "create"),
        Grant("", "gpu-burnin.dev", "nodemarks", "as-remediator"),
    }


def can_i_list(docs: list[dict[str, Any]], user: str, namespace: str) -> set[Grant]:
    return set(admission.Rbac(docs).grants(user, admission.service_account_groups(namespace)))


def gpu_node_accounts(docs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Workload name -> (account, namespace) of every pod the scheduler may put on a GPU node."""
    return {w["metadata"]["name"]: account(w, pod) for w, pod in workloads(docs) if on_gpu_nodes(pod)}


def test_no_pod_on_a_gpu_node_holds_more_than_its_own_node(any_render):
    """Not list nodes or pods, not evict, events only in its namespace: whatever an overlay renamed."""
    accounts = gpu_node_accounts(any_render)
    assert len(accounts) == 3, accounts  # preflight, periodic, watch
    for workload, (user, namespace) in accounts.items():
        held = can_i_list(any_render, user, namespace)
        component = user.rsplit(":", 1)[1].removeprefix("prod-")
        assert held == node_agent_may(namespace, component), f"{workload} ({user}) holds {sorted(held)}"


def test_the_remediator_holds_exactly_the_fleet_wide_rights_and_runs_off_the_gpu_nodes(any_render):
    ((deployment, pod),) = [(w, p) for w, p in workloads(any_render) if w["kind"] == "Deployment"]
    assert not on_gpu_nodes(pod)
    user, namespace = account(deployment, pod)
    assert can_i_list(any_render, user, namespace) == remediator_may(namespace)


def test_every_account_a_binding_names_is_one_a_pod_runs_as(any_render):
    """A binding that an overlay left pointing at the old name grants nothing to the pods."""
    accounts = {account(w, pod) for w, pod in workloads(any_render)}
    bound = set()
    for binding in (d for d in any_render if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", binding["metadata"]["name"]
            bound.add((admission.service_account(subject["namespace"], subject["name"]), subject["namespace"]))
    assert bound == accounts
    accounts_made = {
        (admission.service_account(d["metadata"]["namespace"], d["metadata"]["name"]), d["metadata"]["namespace"])
        for d in any_render
        if d["kind"] == "ServiceAccount"
    }
    assert accounts_made == accounts


def test_the_roles_name_each_permission_plainly(any_render):
    """No wildcard, no resourceNames, no aggregation: what a role says is all it grants."""
    for role in (d for d in any_render if d["kind"] in ("ClusterRole", "Role")):
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        # Events only through a namespaced Role.
        if role["kind"] == "ClusterRole":
            assert not any("events" in rule["resources"] for rule in role["rules"]), role["metadata"]["name"]


def components_in_deploy() -> list[Path]:
    """Every kustomize Component under deploy/ that a site's overlay could add."""
    found = []
    for path in sorted((REPO / "deploy").rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind") == "Component":
            found.append(path.parent)
    return found


def test_no_component_in_deploy_gives_a_pod_on_a_gpu_node_more(tmp_path):
    """An optional component (deploy/watch-eviction gave the watch `list pods` and `create
    pods/eviction` cluster-wide) must not widen what a GPU node's pod holds either."""
    for component in components_in_deploy():
        overlay = tmp_path / component.name
        overlay.mkdir()
        deploy = Path(os.path.relpath(REPO / "deploy", overlay))
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {deploy}\ncomponents:\n  - {Path(os.path.relpath(component, overlay))}\n"
        )
        docs = admission.render(overlay)
        for workload, (user, namespace) in gpu_node_accounts(docs).items():
            held = can_i_list(docs, user, namespace)
            extra = {
                g for g in held if g not in NODE_AGENT_MAY and g.namespace != namespace and g.group != "gpu-burnin.dev"
            }
            assert not extra, f"{component.name}: {workload} ({user}) also holds {sorted(extra)}"


# The remediator (deploy/remediator.yaml): the one place that takes nodes out.

REMEDIATOR_ARGS = [
    "remediator",
    "--gpu-node-selector",
    "nvidia.com/gpu.present=true",
    "--max-unhealthy-share",
    "0.05",
    "--max-unhealthy-nodes",
    "50",
    "--drain",
    "critical",
    "--drain-deadline",
    "604800",
    "--metrics-port",
    "9402",
]


def remediator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "gpu-burnin-remediator")


def test_the_remediator_runs_two_replicas_off_the_gpu_nodes_with_a_disruption_budget(rendered):
    deployment = remediator(rendered)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    labels = spec["selector"]["matchLabels"]
    assert labels == {"app.kubernetes.io/name": "gpu-burnin", "app.kubernetes.io/component": "remediator"}
    assert spec["template"]["metadata"]["labels"].items() >= labels.items()
    pod = spec["template"]["spec"]
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required == {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}]
    }
    assert "tolerations" not in pod and "nodeSelector" not in pod
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels
    budget = one(rendered, "PodDisruptionBudget", "gpu-burnin-remediator")
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels}}


def test_the_remediator_owns_the_brake_and_knows_who_it_is(rendered):
    pod = remediator(rendered)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "remediator" and pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["image"] == SLIM_IMAGE
    assert container["args"] == REMEDIATOR_ARGS
    env = {e["name"]: e for e in container["env"]}
    # The Lease's holder identity and namespace.
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert not any("nvidia.com" in key for part in resources.values() for key in part)


def test_the_remediator_serves_metrics(rendered):
    (container,) = remediator(rendered)["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert container["args"][container["args"].index("--metrics-port") + 1] == str(port["containerPort"])
    service = one(rendered, "Service", "gpu-burnin-remediator")
    assert service["spec"]["selector"] == remediator(rendered)["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": port["containerPort"], "targetPort": port["name"], "protocol": "TCP"}
    ]


def test_the_remediator_runs_unprivileged_as_the_image_user(rendered):
    pod = remediator(rendered)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["securityContext"] == LOCKED_DOWN
    assert "initContainers" not in pod  # no hostPath: nothing of it lives on a node
    assert not any("hostPath" in volume for volume in pod["volumes"])


def test_no_pod_on_a_gpu_node_decides_for_the_fleet(rendered):
    """The brake is the remediator's alone: no node agent is told the fleet's share or selector."""
    for workload, pod in workloads(rendered):
        for container in pod["containers"]:
            flags = BRAKE_FLAGS & set(container["args"])
            if on_gpu_nodes(pod):
                assert not flags, f"{workload['metadata']['name']} decides for the fleet: {flags}"
            else:
                assert flags == BRAKE_FLAGS


def test_every_pod_knows_its_namespace_for_its_events(rendered):
    for workload, pod in workloads(rendered):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, workload[
                "metadata"
            ]["name"]


@pytest.mark.parametrize("component", ["preflight", "periodic", "watch", "remediator"])
def test_every_container_command_line_is_one_gpu_burnin_accepts(rendered, component):
    """The args in deploy/ parsed by the command line itself, with the ConfigMap's values in."""
    from harness import cli

    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    config = generated(rendered, "gpu-burnin-config")["data"]
    ((workload, pod),) = [
        (w, p) for w, p in workloads(rendered) if w["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    (container,) = pod["containers"]
    values = {}
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("configMapKeyRef")
        values[env["name"]] = config[ref["key"]] if ref else env.get("value", "")
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in container["args"]]
    assert args[0] == component
    if component not in commands.choices:
        pytest.skip(f"gpu-burnin has no `{component}` command yet (issue 17's code side adds it)")
    try:
        parser.parse_args(args)
    except SystemExit as err:
        pytest.fail(f"{workload['metadata']['name']}: gpu-burnin {' '.join(args)} exits {err.code}")


# NVML and the GPUs through the NVIDIA runtime (the base), or the host's driver (deploy/gke/).


def gpu_node_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> pod spec of every workload the scheduler may put on a GPU node."""
    return {
        w["metadata"]["labels"]["app.kubernetes.io/component"]: pod for w, pod in workloads(docs) if on_gpu_nodes(pod)
    }


def test_every_pod_on_a_gpu_node_runs_under_the_nvidia_runtime_and_its_root_step_sees_no_gpu(any_render):
    """With the GPU Operator's CDI mode the NVIDIA runtime is no longer the default: the watch (GPUs
    through NVIDIA_VISIBLE_DEVICES) sees none without it. The image says NVIDIA_VISIBLE_DEVICES=all,
    which would hand every GPU to the init container."""
    pods = gpu_node_pods(any_render)
    assert sorted(pods) == ["periodic", "preflight", "watch"]
    for component, pod in pods.items():
        assert pod["runtimeClassName"] == "nvidia", component
        for init in pod["initContainers"]:
            env = {e["name"]: e.get("value") for e in init.get("env", [])}
            assert env.get("NVIDIA_VISIBLE_DEVICES") == "void", f"{component} {init['name']}"
    for workload, pod in workloads(any_render):
        if not on_gpu_nodes(pod):
            assert "runtimeClassName" not in pod, workload["metadata"]["name"]


def render_with(tmp_path: Path, component: str, prefix: str = "prod-") -> list[dict[str, Any]]:
    """deploy/ with deploy/<component>, renamed as a site's overlay would."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    deploy = Path(os.path.relpath(REPO / "deploy", overlay))
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namePrefix: {prefix}\nresources:\n  - {deploy}\ncomponents:\n  - {deploy / component}\n"
    )
    return admission.render(overlay)


@pytest.fixture(scope="module")
def gke(tmp_path_factory) -> list[dict[str, Any]]:
    return render_with(tmp_path_factory.mktemp("gke"), "gke")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_gke_render_validates(gke, version):
    for obj in gke:
        assert kubernetes_validate.validate(obj, version, strict=True) == version.rsplit(".", 1)[0]


def test_on_gke_no_pod_names_a_runtime_and_the_watch_mounts_the_hosts_driver(gke, rendered):
    pods = gpu_node_pods(gke)
    assert sorted(pods) == ["periodic", "preflight", "watch"]
    assert not any("runtimeClassName" in pod for pod in pods.values())
    watch = pods["watch"]
    (container,) = watch["containers"]
    volumes = {v["name"]: v for v in watch["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    driver = mounts["/usr/local/nvidia"]
    assert driver["readOnly"] is True
    assert volumes[driver["name"]]["hostPath"] == {"path": "/home/kubernetes/bin/nvidia", "type": "Directory"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
    # Privileged opens the GPUs' device nodes to a container allocated none; nothing else widens.
    context = container["securityContext"]
    assert context["privileged"] is True and context["allowPrivilegeEscalation"] is True
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    # preflight and periodic request their GPUs (GKE's device plugin mounts the driver): only the runtime goes.
    base = gpu_node_pods(rendered)
    for component in ("preflight", "periodic"):
        expected = {k: v for k, v in base[component].items() if k != "runtimeClassName"}
        found = dict(pods[component])
        assert found.pop("serviceAccountName") == f"prod-{expected.pop('serviceAccountName')}"
        assert found.pop("priorityClassName", None) in (None, f"prod-{expected.pop('priorityClassName', '')}")
        assert found.keys() == expected.keys(), component
        assert found["tolerations"] == expected["tolerations"], component
        assert found["containers"][0]["resources"] == expected["containers"][0]["resources"], component


# The images: each named once, in deploy/kustomization.yaml.


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text()))


def test_each_image_has_one_registry_and_tag_in_one_place(any_render):
    """The manifests name `gpu-burnin` or `gpu-burnin-slim`; kustomization.yaml's `images:` gives each its
    registry and tag, once. Every container of the render runs one of those, whatever an overlay renamed."""
    entries = kustomization()["images"]
    assert sorted(e["name"] for e in entries) == ["gpu-burnin", "gpu-burnin-slim"]
    shipped = {e["name"]: f"{e['newName']}:{e['newTag']}" for e in entries}
    assert shipped == {"gpu-burnin": IMAGE, "gpu-burnin-slim": SLIM_IMAGE}
    used = {}
    for workload, pod in workloads(any_render):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            used[f"{workload['metadata']['name']}/{container['name']}"] = container["image"]
    assert set(used.values()) == set(shipped.values()), used
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.strip().startswith("image:"):
                assert line.split(":", 1)[1].strip() in shipped, f"{path.relative_to(REPO)}: {line.strip()}"


def test_the_watch_and_the_remediator_run_the_slim_image_and_the_burns_the_full_one(rendered):
    """The watch is pulled onto every GPU node: not the 10 GB of the PyTorch image it never uses."""
    for workload, pod in workloads(rendered):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        expected = SLIM_IMAGE if component in ("watch", "remediator") else IMAGE
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert container["image"] == expected, f"{component} {container['name']}"


def test_karpenter_never_disrupts_a_burn(any_render):
    """A node in preflight or under a periodic run holds one pod and no workload: what consolidation
    removes first. The pods say so; the watch (on every node) and the remediator do not."""
    for workload, _pod in workloads(any_render):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        template = (
            workload["spec"]["jobTemplate"]["spec"]["template"]
            if workload["kind"] == "CronJob"
            else workload["spec"]["template"]
        )
        annotations = template["metadata"].get("annotations", {})
        if component in ("preflight", "periodic"):
            assert annotations.get("karpenter.sh/do-not-disrupt") == "true", component
        else:
            assert "karpenter.sh/do-not-disrupt" not in annotations, component
