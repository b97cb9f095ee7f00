"""The parts of a Kubernetes Node that gpu-burnin reads, as the API server sends them (JSON, camelCase).

Every key is optional (`total=False`): the server leaves out what is empty (a node with no taints
has no `spec.taints`), so code reads with `.get(...)` and a default. Only the fields the code reads
are declared; the API's other fields pass through unread.
"""

from __future__ import annotations

from typing import TypedDict


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]


class Taint(TypedDict, total=False):
    key: str
    value: str
    effect: str
    """NoSchedule, PreferNoSchedule or NoExecute."""
    timeAdded: str


class NodeSpec(TypedDict, total=False):
    taints: list[Taint]
    unschedulable: bool


class NodeCondition(TypedDict, total=False):
    type: str
    status: str
    """"True", "False" or "Unknown": strings, as the API spells them."""
    reason: str
    message: str
    lastHeartbeatTime: str
    lastTransitionTime: str


class NodeStatus(TypedDict, total=False):
    conditions: list[NodeCondition]
    capacity: dict[str, str]
    """Quantities as the API writes them ("8", "80Gi"), by resource name (`nvidia.com/gpu`)."""
    allocatable: dict[str, str]


class Node(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NodeSpec
    status: NodeStatus
