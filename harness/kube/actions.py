"""The node lifecycle: what preflight, periodic and retest do to a node, and what status reads.

Each flow costs about one read and one patch of the node, one status patch and one
event; only the brake and status list nodes. The order of writes never leaves a
node that reads as passed when it has not: the GPUBurnIn condition turns True only
after the preflight taint is gone, and a failure's taint and label are written
before its condition.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any

from harness.errors import ConfigError
from harness.kube import node as nodes
from harness.kube.api import Api, Conflict, KubeError
from harness.kube.node import Marks, Node, Outcome, Patch

ATTEMPTS = 5
"""Read-compute-patch rounds before giving up on a node that keeps changing under us."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fleet:
    """How periodic judges a failure against the rest of the fleet."""

    gpu_selector: str = "nvidia.com/gpu.present=true"
    max_unhealthy_share: float = 0.05
    """The brake: never cordon if, counting this node, a larger share of GPU nodes would be out."""
    incomplete_limit: int = 3
    """Incomplete runs in a row that count as a failure: a node that never finishes a test is not healthy."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Done:
    """What a flow did, for the command's exit code and its last line."""

    exit_code: int
    message: str
    braked: bool = False


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
        if body is None:
            return node
        try:
            return api.patch_node(name, body)
        except Conflict:
            continue
    raise KubeError(f'patch node "{name}"', f"it changed under every one of {ATTEMPTS} attempts; try again later")


def preflight(api: Api, name: str, outcome: Outcome, marks: Marks, now: dt.datetime) -> Done:
    """Release the node on a pass; keep it tainted, and say why, otherwise."""
    result = nodes.last_result_value(outcome)
    if outcome.verdict == "pass":
        node = update(
            api,
            name,
            lambda n: nodes.patch(
                n,
                remove=[marks.preflight_taint],
                set_labels={marks.preflight_label.key: None},
                set_annotations={nodes.LAST_RESULT: result},
            ),
        )
        message = f"run {outcome.run_id}: every test passed; {marks.preflight_taint} removed"
        _condition(api, node, "True", "Passed", message, now)
        _event(api, node, warning=False, reason="GPUBurnInPassed", message=message, now=now)
        return Done(exit_code=0, message=f"node {name} released: {message}")
    state = "failed" if outcome.verdict == "fail" else "incomplete"
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
    _event(api, node, warning=True, reason=f"GPUBurnIn{state.title()}", message=message, now=now)
    code = 1 if state == "failed" else 2
    return Done(exit_code=code, message=f"node {name} kept out of service ({marks.preflight_label.key}={state})")


def periodic(api: Api, name: str, outcome: Outcome, marks: Marks, fleet: Fleet, now: dt.datetime) -> Done:
    """Refresh a healthy node's condition; take a failing one out of service, brake permitting."""
    current = api.get_node(name)
    streak = nodes.incomplete_streak(current) + 1 if outcome.verdict == "incomplete" else 0
    if outcome.verdict == "incomplete" and streak >= fleet.incomplete_limit:
        outcome = dataclasses.replace(
            outcome,
            verdict="fail",
            codes=("INCOMPLETE_STREAK", *outcome.codes),
            summary=f"{streak} incomplete runs in a row (limit {fleet.incomplete_limit}); last: {outcome.summary}",
        )
    result = nodes.last_result_value(outcome)
    if outcome.verdict == "pass":
        node = update(
            api,
            name,
            lambda n: nodes.patch(n, set_annotations={nodes.LAST_RESULT: result, nodes.INCOMPLETE_STREAK: None}),
            read=current,
        )
        _condition(api, node, "True", "Passed", f"run {outcome.run_id}: every test passed", now)
        return Done(exit_code=0, message=f"node {name} healthy")
    message = f"run {outcome.run_id}: {outcome.verdict}: {outcome.summary}"
    if outcome.verdict == "incomplete":
        node = update(
            api,
            name,
            lambda n: nodes.patch(n, set_annotations={nodes.LAST_RESULT: result, nodes.INCOMPLETE_STREAK: str(streak)}),
            read=current,
        )
        _condition(api, node, "Unknown", "Incomplete", message, now)
        _event(api, node, warning=True, reason="GPUBurnInIncomplete", message=message, now=now)
        return Done(exit_code=2, message=f"node {name} left in service: incomplete {streak} time(s) in a row")
    return take_out(api, name, outcome, marks, fleet, now, read=current, also={nodes.INCOMPLETE_STREAK: None})


def take_out(
    api: Api,
    name: str,
    outcome: Outcome,
    marks: Marks,
    fleet: Fleet,
    now: dt.datetime,
    *,
    read: Node | None = None,
    also: dict[str, str | None] | None = None,
    kind: str = nodes.CONDITION,
) -> Done:
    """A failing node out of service, brake permitting: cordon, the unhealthy taint and label, a False
    condition (`kind`: periodic's, or the watch's) and a Warning Event. Periodic's failure and the
    watch's take this one path. Over the brake, the node keeps serving: its condition and one
    GPUBurnInBrake Event say why. `also`: more annotations to write with the cordon."""
    result = nodes.last_result_value(outcome)
    message = f"run {outcome.run_id}: {outcome.verdict}: {outcome.summary}"
    out, total = _unhealthy_share(api, name, marks, fleet)
    if (out + 1) / total > fleet.max_unhealthy_share:
        share = f"{out + 1} of {total} GPU nodes ({(out + 1) / total:.0%})"
        brake = (
            f"not cordoned: that would take {share} out of service, over the limit of "
            f"{fleet.max_unhealthy_share:.0%} (--max-unhealthy-share); check the baseline before the nodes. {message}"
        )
        node = update(api, name, lambda n: nodes.patch(n, set_annotations={nodes.LAST_RESULT: result}), read=read)
        _condition(api, node, "False", _reason(outcome.codes), message, now, kind=kind)
        _event(api, node, warning=True, reason="GPUBurnInBrake", message=brake, now=now)
        return Done(exit_code=1, message=f"node {name} failed but was {brake}", braked=True)
    cordoned = json.dumps({"by": f"gpu-burnin {outcome.command}", "run_id": outcome.run_id, "time": nodes.stamp(now)})
    # The failure's condition before the cordon: killed in between, the node never reads healthy while out.
    current = _condition(api, read or api.get_node(name), "False", _reason(outcome.codes), message, now, kind=kind)
    node = update(
        api,
        name,
        lambda n: nodes.patch(
            n,
            add=[marks.unhealthy_taint],
            set_labels={marks.unhealthy_label.key: marks.unhealthy_label.value},
            set_annotations={nodes.LAST_RESULT: result, nodes.CORDONED: cordoned, **(also or {})},
            unschedulable=True,
        ),
        read=current,
    )
    _event(api, node, warning=True, reason="GPUBurnInUnhealthy", message=f"cordoned: {message}", now=now)
    return Done(exit_code=1, message=f"node {name} cordoned and tainted {marks.unhealthy_taint}")


def retest(api: Api, name: str, marks: Marks, now: dt.datetime) -> Done:
    """Back to preflight after a repair: the preflight taint and pending label, this tool's
    unhealthy marks removed, and the cordon lifted only if this tool set it."""
    lifted: list[bool] = []

    def compute(n: Node) -> Patch:
        ours = nodes.CORDONED in nodes.annotations_of(n)
        lifted[:] = [ours]
        return nodes.patch(
            n,
            add=[marks.preflight_taint],
            remove=[marks.unhealthy_taint],
            set_labels={marks.preflight_label.key: marks.preflight_label.value, marks.unhealthy_label.key: None},
            set_annotations={nodes.PENDING_SINCE: nodes.stamp(now), nodes.CORDONED: None},
            unschedulable=False if ours else None,
        )

    node = update(api, name, compute)
    message = "retest requested: back in preflight"
    _condition(api, node, "Unknown", "RetestRequested", message, now)
    _event(api, node, warning=False, reason="GPUBurnInRetest", message=message, now=now)
    still = bool(node.get("spec", {}).get("unschedulable")) and not lifted[0]
    note = "; it stays cordoned: something other than gpu-burnin cordoned it" if still else ""
    return Done(exit_code=0, message=f"node {name} is back in preflight ({marks.preflight_label}){note}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeState:
    name: str
    state: str
    """preflight-pending, preflight-failed, preflight-incomplete, unhealthy, incomplete, healthy, never-tested."""
    since: str
    """When it entered the state, RFC 3339, or ""."""
    for_s: float | None
    run_id: str
    codes: tuple[str, ...]
    stuck: bool
    """Pending in preflight past the limit: its preflight pod never ran or never finished."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "codes": list(self.codes)}


def status(api: Api, marks: Marks, fleet: Fleet, *, pending_limit_s: float, now: dt.datetime) -> list[NodeState]:
    """Every GPU node by state, read-only: one list call."""
    found = [_state(n, marks, pending_limit_s, now) for n in api.list_nodes(fleet.gpu_selector)]
    order = ["preflight-pending", "preflight-failed", "preflight-incomplete", "unhealthy", "incomplete"]
    return sorted(found, key=lambda s: (order.index(s.state) if s.state in order else len(order), s.name))


def outcome_of(
    run_id: str,
    verdict: str,
    reasons: Sequence[str],
    codes: Sequence[str],
    remediation: str,
    when: dt.datetime,
    command: str,
) -> Outcome:
    summary = reasons[0] if reasons else "every test passed"
    if remediation and remediation != "none":
        summary += f" (remediation: {remediation})"
    return Outcome(run_id=run_id, verdict=verdict, codes=tuple(codes), summary=summary, when=when, command=command)


def _state(n: Node, marks: Marks, pending_limit_s: float, now: dt.datetime) -> NodeState:
    labels, cond, last = nodes.labels_of(n), nodes.condition(n) or {}, nodes.last_result(n)
    preflight = labels.get(marks.preflight_label.key)
    if preflight is not None:
        state = f"preflight-{preflight}"
    elif labels.get(marks.unhealthy_label.key) == marks.unhealthy_label.value:
        state = "unhealthy"
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
    return NodeState(
        name=n["metadata"]["name"],
        state=state,
        since=since,
        for_s=for_s,
        run_id=str(last.get("run_id", "")),
        codes=tuple(last.get("codes", ())),
        stuck=state == "preflight-pending" and for_s is not None and for_s > pending_limit_s,
    )


CORDON_PENDING = "CordonPending"
"""The watch's condition reason while a finding waits its last poll before a cordon: the brake counts
such nodes as out, so that watches failing at the same moment (a bad driver roll-out) see each other."""


def _unhealthy_share(api: Api, name: str, marks: Marks, fleet: Fleet) -> tuple[int, int]:
    """(other GPU nodes already out or about to be, GPU nodes in all, this one counted)."""
    fleet_nodes = api.list_nodes(fleet.gpu_selector)
    names = {n["metadata"]["name"] for n in fleet_nodes}
    out = sum(1 for n in fleet_nodes if n["metadata"]["name"] != name and _out(n, marks))
    return out, len(names | {name})


def _out(n: Node, marks: Marks) -> bool:
    if nodes.labels_of(n).get(marks.unhealthy_label.key) == marks.unhealthy_label.value:
        return True
    watch = nodes.condition(n, nodes.WATCH_CONDITION) or {}
    return watch.get("status") == "False" and watch.get("reason") == CORDON_PENDING


def _condition(
    api: Api, node: Node, status: str, reason: str, message: str, now: dt.datetime, *, kind: str = nodes.CONDITION
) -> Node:
    """Set the condition; the node as written (its new resourceVersion, for the next patch)."""
    return api.patch_node_status(
        node["metadata"]["name"], nodes.status_patch(node, status, reason, message, now, kind=kind)
    )


def _event(api: Api, node: Node, *, warning: bool, reason: str, message: str, now: dt.datetime) -> None:
    api.create_event(nodes.event(node, warning=warning, reason=reason, message=message, now=now))


def _reason(codes: Sequence[str]) -> str:
    return ",".join(codes) or "Failed"
