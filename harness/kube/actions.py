"""The node lifecycle of the node agents (preflight, periodic) and of a person (retest, status).

A node agent writes only its own node, and only reports: preflight releases its node on a
pass (its own taint and label, nothing else) and holds it otherwise; periodic, on a
failure, *requests* that the node be taken out (the health label `failing`, the severity,
`gpu-burnin/requested`): the remediator (harness/remediator/), the one holder of
fleet-wide rights, decides under the brake and takes it out. No agent lists nodes,
cordons, taints for health or evicts.

Each flow costs about one read and one patch of the node, one status patch and one
event. The order of writes never leaves a node that reads as passed when it has not:
the GPUBurnIn condition turns True only after the preflight taint is gone, and a
failure's condition is written before its taint, label or request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from harness.errors import ConfigError
from harness.kube import node as nodes
from harness.kube.api import Api, Conflict, KubeError
from harness.kube.node import Marks, Node, Outcome, Patch
from harness.verdict import ExitCode, Status

ATTEMPTS = 5
"""Read-compute-patch rounds before giving up on a node that keeps changing under us."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fleet:
    """How the GPU nodes are found, and how periodic counts incomplete runs."""

    gpu_selector: str = "nvidia.com/gpu.present=true"
    incomplete_limit: int = 3
    """Incomplete runs in a row that count as a failure: a node that never finishes a test is not healthy."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Done:
    """What a flow did, for the command's exit code and its last line."""

    exit_code: int
    message: str


def read_node(api: Api, name: str) -> Node:
    """The node, read before anything runs: one that does not exist, or that this identity may not
    read, is a configuration error (exit 4); an API server out of reach stays a KubeError."""
    try:
        return api.get_node(name)
    except KubeError as err:
        if err.status == 404:
            raise ConfigError(f"node {name!r} does not exist in this cluster", option="--node") from None
        if err.status in (401, 403):
            raise ConfigError(f"cannot read node {name!r}: {err.problem}", option="--node") from None
        raise


def update(api: Api, name: str, compute: Callable[[Node], Patch | None], *, read: Node | None = None) -> Node:
    """Read the node (or take `read`, just read), compute a patch from it, write it; on a conflict,
    read again."""
    for attempt in range(ATTEMPTS):
        node = read if read is not None and attempt == 0 else api.get_node(name)
        body = compute(node)
        if body is None or not nodes.metadata_changes(body):
            return node  # nothing to change: no write
        try:
            return api.patch_node(name, body)
        except Conflict:
            continue
    raise KubeError(f'patch node "{name}"', f"it changed under every one of {ATTEMPTS} attempts; try again later")


def preflight(api: Api, name: str, outcome: Outcome, marks: Marks, now: dt.datetime) -> Done:
    """Release the node on a pass; keep it tainted, and say why, otherwise."""
    result = nodes.last_result_value(outcome)
    if outcome.verdict == Status.PASS:
        # The taint first, the label last: the label's removal is what makes the DaemonSet delete this pod, so
        # everything else (the condition, the Event) is done by then, and a pod stopped in between leaves a
        # node still labelled, whose next preflight acts on this result without burning again.
        node = update(
            api,
            name,
            lambda n: nodes.patch(n, remove=[marks.preflight_taint], set_annotations={nodes.LAST_RESULT: result}),
        )
        message = f"run {outcome.run_id}: every test passed; {marks.preflight_taint} removed"
        node = _condition(api, node, "True", "Passed", message, now)
        _event(api, node, outcome.run_id, warning=False, reason="GPUBurnInPassed", message=message, now=now)
        update(api, name, lambda n: nodes.patch(n, set_labels={marks.preflight_label.key: None}), read=node)
        return Done(exit_code=int(ExitCode.PASS), message=f"node {name} released: {message}")
    state = "failed" if outcome.verdict == Status.FAIL else "incomplete"
    status, reason = ("False", _reason(outcome.codes)) if state == "failed" else ("Unknown", "Incomplete")
    message = f"run {outcome.run_id}: {outcome.verdict}: {outcome.summary}"
    # The condition first: a process killed between the two writes leaves a node that reads as not
    # passed while it may still lack the taint, never one that reads as passed while held.
    current = _condition(api, api.get_node(name), status, reason, message, now)
    node = update(
        api,
        name,
        lambda n: nodes.patch(
            n,
            add=[marks.preflight_taint],  # fail closed: a node without the taint gets it back
            set_labels={marks.preflight_label.key: state},
            set_annotations={nodes.LAST_RESULT: result},
        ),
        read=current,
    )
    reason_event = f"GPUBurnIn{state.title()}"
    _event(api, node, outcome.run_id, warning=True, reason=reason_event, message=message, now=now)
    code = int(ExitCode.FAIL if state == "failed" else ExitCode.INCOMPLETE)
    return Done(exit_code=code, message=f"node {name} kept out of service ({marks.preflight_label.key}={state})")


def periodic(api: Api, name: str, outcome: Outcome, marks: Marks, fleet: Fleet, now: dt.datetime) -> Done:
    """Refresh a healthy node's condition; on a failure, request that the node be taken out."""
    current = api.get_node(name)
    streak = nodes.incomplete_streak(current) + 1 if outcome.verdict == Status.INCOMPLETE else 0
    if outcome.verdict == Status.INCOMPLETE and streak >= fleet.incomplete_limit:
        outcome = dataclasses.replace(
            outcome,
            verdict=Status.FAIL,
            codes=("INCOMPLETE_STREAK", *outcome.codes),
            summary=f"{streak} incomplete runs in a row (limit {fleet.incomplete_limit}); last: {outcome.summary}",
        )
    result = nodes.last_result_value(outcome)
    if outcome.verdict == Status.PASS:
        node = update(
            api,
            name,
            lambda n: nodes.patch(n, set_annotations={nodes.LAST_RESULT: result, nodes.INCOMPLETE_STREAK: None}),
            read=current,
        )
        _condition(api, node, "True", "Passed", f"run {outcome.run_id}: every test passed", now)
        return Done(exit_code=int(ExitCode.PASS), message=f"node {name} healthy")
    message = f"run {outcome.run_id}: {outcome.verdict}: {outcome.summary}"
    if outcome.verdict == Status.INCOMPLETE:
        node = update(
            api,
            name,
            lambda n: nodes.patch(n, set_annotations={nodes.LAST_RESULT: result, nodes.INCOMPLETE_STREAK: str(streak)}),
            read=current,
        )
        _condition(api, node, "Unknown", "Incomplete", message, now)
        _event(api, node, outcome.run_id, warning=True, reason="GPUBurnInIncomplete", message=message, now=now)
        return Done(
            exit_code=int(ExitCode.INCOMPLETE),
            message=f"node {name} left in service: incomplete {streak} time(s) in a row",
        )
    severity = nodes.CRITICAL if outcome.critical else nodes.FAIL
    current = _condition(api, current, "False", _reason(outcome.codes), message, now)
    node = update(
        api,
        name,
        lambda n: request_patch(n, marks, outcome, also={nodes.LAST_RESULT: result, nodes.INCOMPLETE_STREAK: None}),
        read=current,
    )
    said = f"asked to be taken out of service ({severity}): {message}"
    _event(api, node, outcome.run_id, warning=True, reason="GPUBurnInFailing", message=said, now=now)
    shown = nodes.labels_of(node).get(marks.unhealthy_label.key)
    return Done(
        exit_code=int(ExitCode.FAIL),
        message=f"node {name} failed: {marks.unhealthy_label.key}={shown}, severity {severity}",
    )


def request_patch(n: Node, marks: Marks, outcome: Outcome, *, also: dict[str, str | None] | None = None) -> Patch:
    """A node agent's request to take its node out, from a failing outcome (periodic's, or the watch's)."""
    requested: dict[str, Any] = {
        "by": f"gpu-burnin {outcome.command}",
        "reason": outcome.summary[:1024],
        "codes": list(outcome.codes)[:20],
        "time": nodes.stamp(outcome.when),
    }
    return nodes.request_patch(n, marks, critical=outcome.critical, requested=requested, annotations=also)


def retest(api: Api, name: str, marks: Marks, now: dt.datetime) -> Done:
    """Back to preflight after a repair: the preflight taint and pending label; the health marks (the
    request, the severity, the unhealthy taint and label, the remediator's record) removed; the cordon
    lifted only if gpu-burnin set it (its record says the node was not cordoned before)."""
    lifted: list[bool] = []

    def compute(n: Node) -> Patch:
        ours = nodes.cordoned_by_us(nodes.annotations_of(n))
        lifted[:] = [ours]
        return nodes.patch(
            n,
            add=[marks.preflight_taint],
            remove=[marks.unhealthy_taint],
            set_labels={
                marks.preflight_label.key: marks.preflight_label.value,
                marks.unhealthy_label.key: None,
                marks.severity.key: None,
            },
            set_annotations={nodes.PENDING_SINCE: nodes.stamp(now), nodes.CORDONED: None, nodes.REQUESTED: None},
            unschedulable=False if ours else None,
        )

    node = update(api, name, compute)
    message = "retest requested: back in preflight"
    body = nodes.status_patch(node, "Unknown", "RetestRequested", message, now)
    body["status"]["conditions"].append({"type": nodes.REMEDIATION_CONDITION, "$patch": "delete"})
    node = api.patch_node_status(name, body)
    _event(api, node, nodes.stamp(now), warning=False, reason="GPUBurnInRetest", message=message, now=now)
    still = bool(node.get("spec", {}).get("unschedulable")) and not lifted[0]
    note = "; it stays cordoned: something other than gpu-burnin cordoned it" if still else ""
    return Done(
        exit_code=int(ExitCode.PASS), message=f"node {name} is back in preflight ({marks.preflight_label}){note}"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeState:
    name: str
    state: str
    """preflight-pending, preflight-failed, preflight-incomplete, unhealthy, failing (a request the remediator
    has not acted on: braked, or not yet seen), incomplete, healthy, never-tested."""
    since: str
    """When it entered the state, RFC 3339, or ""."""
    for_s: float | None
    run_id: str
    codes: tuple[str, ...]
    stuck: bool
    """Pending in preflight past the limit: its preflight pod never ran or never finished."""
    gpus: str = ""
    """Allocatable GPUs of expected ("7/8"; "8/?" when nothing says how many to expect)."""
    why: str = ""
    """For a node in preflight: its preflight pod's phase and what holds it (the scheduler's message, an
    image pull, a crash loop); for a node with fewer GPUs than expected: that."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "codes": list(self.codes)}


PREFLIGHT_PODS = "app.kubernetes.io/name=gpu-burnin,app.kubernetes.io/component=preflight"
"""The preflight DaemonSet's pods (deploy/daemonset.yaml), in the tool's namespace."""
GPU_RESOURCE = "nvidia.com/gpu"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
"""GPU feature discovery's count of the node's GPUs: how many the node is expected to have."""


def status(api: Api, marks: Marks, fleet: Fleet, *, pending_limit_s: float, now: dt.datetime) -> list[NodeState]:
    """Every GPU node by state, read-only: one list of nodes and, when some are in preflight, one
    label-selected list of the preflight pods in the tool's namespace (why each is held)."""
    listed = api.list_nodes(fleet.gpu_selector)
    found = [_state(n, marks, pending_limit_s, now) for n in listed]
    if any(s.state.startswith("preflight-") for s in found):
        found = _with_pods(api, found)
    order = ["preflight-pending", "preflight-failed", "preflight-incomplete", "unhealthy", "failing", "incomplete"]
    return sorted(found, key=lambda s: (order.index(s.state) if s.state in order else len(order), s.name))


def _with_pods(api: Api, found: list[NodeState]) -> list[NodeState]:
    try:
        pods = api.list_pods(PREFLIGHT_PODS)
    except KubeError as err:  # status is read-only and a person's: their rights may stop at nodes
        said = f"the preflight pods cannot be read: {err.problem}"
        return [_also(s, said) if s.state.startswith("preflight-") else s for s in found]
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_node.setdefault(pod_node(pod), []).append(pod)
    out = []
    for s in found:
        if s.state.startswith("preflight-"):
            mine = by_node.get(s.name, [])
            s = _also(s, "; ".join(pod_problem(p) for p in mine) if mine else "no preflight pod for this node")
        out.append(s)
    return out


def _also(state: NodeState, said: str) -> NodeState:
    """What the pods say first, then what the node says (a GPU missing, no device plugin)."""
    return dataclasses.replace(state, why=f"{said}; {state.why}" if state.why else said)


def pod_node(pod: dict[str, Any]) -> str:
    """The node a pod runs on, or, not yet scheduled, the node a DaemonSet aimed it at (its node affinity on
    metadata.name, as the DaemonSet controller writes it)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and field.get("values"):
                return str(field["values"][0])
    return ""


def pod_problem(pod: dict[str, Any]) -> str:
    """The pod's phase and what holds it, in one line: the scheduler's message while unscheduled, a waiting
    container's reason and message (ImagePullBackOff, CrashLoopBackOff, ...), else the phase alone."""
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    name = str((pod.get("metadata") or {}).get("name", ""))
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return f"pod {name}: {phase}: {reason}: {condition.get('message', '')}".rstrip(": ")
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in ("ContainerCreating", "PodInitializing"):
            said = f"pod {name}: {phase}: container {container.get('name', '')}: {reason}"
            message = str(waiting.get("message") or "")
            return f"{said}: {message}" if message else said
    return f"pod {name}: {phase}"


def expected_gpus(node: Node) -> int | None:
    """How many GPUs the node should have: GPU feature discovery's label; None when it does not say."""
    text = nodes.labels_of(node).get(GPU_COUNT_LABEL, "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def allocatable_gpus(node: Node) -> int | None:
    text = str(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, ""))
    return int(text) if text.isdigit() else None


def outcome_of(
    run_id: str,
    verdict: Status | str,
    reasons: Sequence[str],
    codes: Sequence[str],
    remediation: str,
    when: dt.datetime,
    command: str,
    *,
    critical: bool = False,
) -> Outcome:
    summary = reasons[0] if reasons else "every test passed"
    if remediation and remediation != "none":
        summary += f" (remediation: {remediation})"
    return Outcome(
        run_id=run_id,
        verdict=Status(verdict),
        codes=tuple(codes),
        summary=summary,
        when=when,
        command=command,
        critical=critical,
    )


def _state(n: Node, marks: Marks, pending_limit_s: float, now: dt.datetime) -> NodeState:
    labels, cond, last = nodes.labels_of(n), nodes.condition(n) or {}, nodes.last_result(n)
    preflight = labels.get(marks.preflight_label.key)
    if preflight is not None:
        state = f"preflight-{preflight}"
    elif labels.get(marks.unhealthy_label.key) == marks.unhealthy_label.value:
        state = "unhealthy"
    elif labels.get(marks.unhealthy_label.key) == nodes.FAILING:
        state = "failing"
    elif cond.get("status") == "True":
        state = "healthy"
    elif cond:
        state = "incomplete"
    else:
        state = "never-tested"
    since = cond.get("lastTransitionTime", "")
    if state == "preflight-pending":
        since = nodes.annotations_of(n).get(nodes.PENDING_SINCE) or n["metadata"].get("creationTimestamp", "")
    began = nodes.parse_stamp(since) if since else None
    for_s = (now - began).total_seconds() if began else None
    expected, allocatable = expected_gpus(n), allocatable_gpus(n)
    gpus = f"{'?' if allocatable is None else allocatable}/{'?' if expected is None else expected}"
    codes = tuple(last.get("codes", ()))
    why = ""
    if expected is not None and allocatable is not None and allocatable < expected:
        codes = tuple(dict.fromkeys((*codes, "GPU_MISSING")))
        why = f"GPU_MISSING (fail): {allocatable} of {expected} GPUs allocatable ({GPU_COUNT_LABEL}={expected})"
    elif allocatable is None:
        why = f"no {GPU_RESOURCE} allocatable: is the device plugin running (tolerating the preflight taint)?"
    return NodeState(
        name=n["metadata"]["name"],
        state=state,
        since=since,
        for_s=for_s,
        run_id=str(last.get("run_id", "")),
        codes=codes,
        stuck=state == "preflight-pending" and for_s is not None and for_s > pending_limit_s,
        gpus=gpus,
        why=why,
    )


def _condition(
    api: Api, node: Node, status: str, reason: str, message: str, now: dt.datetime, *, kind: str = nodes.CONDITION
) -> Node:
    """Set the condition; the node as written (its new resourceVersion, for the next patch)."""
    return api.patch_node_status(
        node["metadata"]["name"], nodes.status_patch(node, status, reason, message, now, kind=kind)
    )


def _event(api: Api, node: Node, key: str, *, warning: bool, reason: str, message: str, now: dt.datetime) -> None:
    event = nodes.event(
        node, namespace=api.namespace, key=key, warning=warning, reason=reason, message=message, now=now
    )
    api.create_event(event)


def _reason(codes: Sequence[str]) -> str:
    return ",".join(codes) or "Failed"
