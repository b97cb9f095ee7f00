"""Nodes as the API server holds them at each step of gpu-burnin's lifecycle, and the writes
each component makes on them (tests/test_admission.py judges them against deploy/admission/)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

NODE = "gpu-node-7"
OTHER_NODE = "gpu-node-8"
REMEDIATOR_NODE = "cpu-node-1"


def home_node(component: str) -> str:
    """The node a component's pod runs on: the remediator off the GPU nodes, the node agents on theirs."""
    return REMEDIATOR_NODE if component == "remediator" else NODE


Edit = Callable[[dict[str, Any]], object]


def condition(kind: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": f"gpu-burnin: {reason}",
        "lastHeartbeatTime": "2026-11-28T05:10:00Z",
        "lastTransitionTime": "2026-11-28T05:10:00Z",
    }


def in_preflight() -> dict[str, Any]:
    """A GPU node that joined with the preflight taint and label, as preflight burns it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "uid": "5b7c9d1e-2f3a-4b5c-6d7e-8f9a0b1c2d3e",
            "resourceVersion": "81234",
            "labels": {
                "kubernetes.io/hostname": NODE,
                "nvidia.com/gpu.present": "true",
                "team.example.com/pool": "training",
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
            "nodeInfo": {"kubeletVersion": "v1.31.4", "containerRuntimeVersion": "containerd://1.7.23"},
            "images": [{"names": ["nvcr.io/nvidia/pytorch:25.01-py3"], "sizeBytes": 10737418240}],
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


def last_result(verdict: str) -> str:
    return (
        f'{{"run_id":"20261128T051000Z-a1b2c3","verdict":"{verdict}","codes":[],'
        '"time":"2026-11-28T05:10:00Z","command":"gpu-burnin preflight"}'
    )


REQUESTED = '{"by":"watch","reason":"XID 79","codes":["XID"],"time":"2026-11-28T11:10:00Z"}'
CORDONED = '{"by":"gpu-burnin remediator","was_cordoned":false,"time":"2026-11-28T11:10:05Z"}'


def taints_without(node: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [t for t in node["spec"]["taints"] if t["key"] != key]


def set_condition(node: dict[str, Any], new: dict[str, Any]) -> None:
    kept = [c for c in node["status"]["conditions"] if c["type"] != new["type"]]
    node["status"]["conditions"] = [*kept, new]


def in_service() -> dict[str, Any]:
    node = in_preflight()
    node["spec"]["taints"] = taints_without(node, "gpu-burnin/preflight")
    del node["metadata"]["labels"]["gpu-burnin/preflight"]
    node["metadata"]["annotations"]["gpu-burnin/last-result"] = last_result("pass")
    set_condition(node, condition("GPUBurnIn", "True", "Passed"))
    return node


def failing(severity: str = "fail") -> dict[str, Any]:
    """In service, with a node agent's request to take it out."""
    node = in_service()
    node["metadata"]["labels"].update({"gpu-burnin/health": "failing", "gpu-burnin/severity": severity})
    node["metadata"]["annotations"]["gpu-burnin/requested"] = REQUESTED
    return node


def unhealthy() -> dict[str, Any]:
    """Taken out by the remediator."""
    node = failing()
    take_out(node)
    return node


def take_out(node: dict[str, Any]) -> None:
    node["metadata"]["labels"]["gpu-burnin/health"] = "unhealthy"
    node["spec"]["taints"].append({"key": "gpu-burnin/unhealthy", "effect": "NoSchedule"})
    node["spec"]["unschedulable"] = True
    node["metadata"]["annotations"]["gpu-burnin/cordoned"] = CORDONED


def bare() -> dict[str, Any]:
    """A node with no labels, annotations, taints or conditions at all."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}, "spec": {}, "status": {}}


def changed(old: dict[str, Any], edit: Edit) -> dict[str, Any]:
    new = copy.deepcopy(old)
    edit(new)
    return new


# -- the writes --------------------------------------------------------------------------------


def preflight_passes(node: dict[str, Any]) -> None:
    node["spec"]["taints"] = taints_without(node, "gpu-burnin/preflight")
    del node["metadata"]["labels"]["gpu-burnin/preflight"]
    node["metadata"]["annotations"]["gpu-burnin/last-result"] = last_result("pass")


def preflight_fails(label: str) -> Edit:
    def edit(node: dict[str, Any]) -> None:
        # The taint back where it is gone (fail closed); kept where it is.
        taints = node["spec"].setdefault("taints", [])
        if not any(t["key"] == "gpu-burnin/preflight" for t in taints):
            taints.append({"key": "gpu-burnin/preflight", "effect": "NoSchedule"})
        node["metadata"].setdefault("labels", {})["gpu-burnin/preflight"] = label
        node["metadata"].setdefault("annotations", {})["gpu-burnin/last-result"] = last_result(label)

    return edit


def requests_take_out(by: str, severity: str, **annotations: str) -> Edit:
    def edit(node: dict[str, Any]) -> None:
        node["metadata"]["labels"].update({"gpu-burnin/health": "failing", "gpu-burnin/severity": severity})
        node["metadata"]["annotations"]["gpu-burnin/requested"] = REQUESTED.replace('"watch"', f'"{by}"')
        node["metadata"]["annotations"].update(annotations)

    return edit


def labels(**values: str | None) -> Edit:
    """Set (None: remove) gpu-burnin/<name> labels; underscores in names stand for '-'."""

    def edit(node: dict[str, Any]) -> None:
        for name, value in values.items():
            key = f"gpu-burnin/{name.replace('_', '-')}"
            if value is None:
                node["metadata"]["labels"].pop(key, None)
            else:
                node["metadata"]["labels"][key] = value

    return edit


def annotate(key: str, value: str | None) -> Edit:
    def edit(node: dict[str, Any]) -> None:
        if value is None:
            node["metadata"]["annotations"].pop(key, None)
        else:
            node["metadata"].setdefault("annotations", {})[key] = value

    return edit


def add_taint(key: str, effect: str = "NoSchedule", value: str | None = None) -> Edit:
    taint = {"key": key, "effect": effect, **({"value": value} if value is not None else {})}
    return lambda node: node["spec"].setdefault("taints", []).append(taint)


def remove_taint(key: str) -> Edit:
    return lambda node: node["spec"].update(taints=taints_without(node, key))


def cordon(value: bool) -> Edit:
    return lambda node: node["spec"].update(unschedulable=value)


def sets(kind: str, status: str, reason: str) -> Edit:
    return lambda node: set_condition(node, condition(kind, status, reason))


def both(*edits: Edit) -> Edit:
    def edit(node: dict[str, Any]) -> None:
        for one in edits:
            one(node)

    return edit


def admin_cordoned() -> dict[str, Any]:
    node = failing("critical")
    node["spec"]["unschedulable"] = True
    return node


def release(node: dict[str, Any]) -> None:
    """What `gpu-burnin retest` does: everything a component may never do."""
    node["spec"]["taints"] = [
        *taints_without(node, "gpu-burnin/unhealthy"),
        {"key": "gpu-burnin/preflight", "effect": "NoSchedule"},
    ]
    node["spec"]["unschedulable"] = False
    for key in ("gpu-burnin/health", "gpu-burnin/severity"):
        del node["metadata"]["labels"][key]
    node["metadata"]["labels"]["gpu-burnin/preflight"] = "pending"
    node["metadata"]["annotations"]["gpu-burnin/pending-since"] = "2026-11-29T09:00:00Z"


def event(
    about: str = NODE, *, kind: str = "Node", namespace: str = "gpu-burnin", component: str = "gpu-burnin"
) -> dict[str, Any]:
    """A core/v1 Event as harness/kube/node.py posts one."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{about}.1f2e3d4c5b6a7988", "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": kind, "name": about, "uid": "5b7c9d1e"},
        "type": "Warning",
        "reason": "GPUBurnInFailed",
        "message": "run 20261128T051000Z-a1b2c3: DATA_MISMATCH on GPU 3",
        "source": {"component": component, "host": about},
        "reportingComponent": component,
        "reportingInstance": about,
        "firstTimestamp": "2026-11-28T05:10:00Z",
        "lastTimestamp": "2026-11-28T05:10:00Z",
        "count": 1,
    }
