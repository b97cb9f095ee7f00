"""One reconcile pass: the brake's plan carried out, and every node taken out followed up.

Everything is recomputed from the nodes: a pass after a restart or a failover finds each
node where the last one left it. A take-out is one patch of the node (cordon, taint,
label, the record of whether it was cordoned before), then its Event, then the
GPUBurnInRemediation condition; every Event's name is derived from what it announces, so
posting it again is refused (409), never doubled. A node this replica did not see through
(one that was mid-way when the previous leader stopped) is read once, whole: its
condition says whether the last step was done.

Drains evict the node's GPU pods through the Eviction API (PodDisruptionBudgets decide);
a refusal (429) waits, doubling, before that node's next try. A drain unfinished after
`drain_deadline` is reported overdue; pods are deleted only with `force_after`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.kube import actions
from harness.kube import node as nodes
from harness.kube.api import Api, Blocked, KubeError
from harness.remediator import brake
from harness.remediator.brake import Plan, Seen
from harness.remediator.config import DRAIN_FAIL, DRAIN_NEVER, Config
from harness.remediator.view import View

TAKEN_OUT, BRAKED = "TakenOut", "Braked"
DRAINING, DRAINED, OVERDUE, BLOCKED = "Draining", "Drained", "DrainOverdue", "DrainBlocked"
GPU_RESOURCE = "nvidia.com/gpu"
MIRROR = "kubernetes.io/config.mirror"

if TYPE_CHECKING:  # prometheus_client, loaded only by a remediator that runs
    from harness.remediator.metrics import Metrics


class LostLead(Exception):
    """This replica stopped leading in the middle of a pass: it stops acting at once."""


class Remediator:
    def __init__(
        self,
        api: Api,
        view: View,
        config: Config,
        *,
        leading: Callable[[], bool],
        wall: Callable[[], dt.datetime],
        say: Callable[[str], None],
        metrics: Metrics | None = None,
    ):
        self.api = api
        self.view = view
        self.config = config
        self.marks = config.marks
        self.leading = leading
        self.wall = wall
        self.say = say
        self.metrics = metrics or _metrics()
        self.shown: dict[str, tuple[str, str, str]] = {}
        """What this replica knows each node's condition says: (status, reason, since)."""
        self.inherited: set[str] | None = None
        """Nodes requested or out when this replica began leading: their state is read before it is redone."""
        self.next_try: dict[str, dt.datetime] = {}
        self.backoff: dict[str, float] = {}
        self.drain_state: dict[str, str] = {}
        self.first_seen: dict[str, str] = {}
        """For a mark without a time of its own (set by hand): when this replica first saw it."""
        self.columns_at: dt.datetime | None = None
        self.errors = 0
        """API calls that failed for good in the last pass."""
        self.done: dict[str, int] = {}
        """What the last pass did: nodes taken out, braked requests announced, pods evicted."""
        self._said_braked = 0

    def begin(self) -> None:
        """Forget what a previous spell of leading knew: another replica may have acted since."""
        self.shown.clear()
        self.next_try.clear()
        self.backoff.clear()
        self.drain_state.clear()
        self.inherited = None

    # -- the pass -------------------------------------------------------------------------------

    def run_pass(self) -> Plan:
        """Decide and act on the view as it is. Raises LostLead; a KubeError on one node is said and
        counted, and the pass goes on with the others."""
        now = self.wall()
        self.errors = 0
        self.done = {"taken out": 0, "braked": 0, "evicted": 0}
        seen = self.view.snapshot()
        if self.inherited is None:
            self.inherited = {n.name for n in seen if n.health}
        if self._columns_due(seen, now):
            self.view.refresh_columns()
            self.columns_at = now
            seen = self.view.snapshot()
        unhealthy = self.marks.unhealthy_label.value
        plan = brake.plan(seen, max_share=self.config.max_share, max_nodes=self.config.max_nodes, unhealthy=unhealthy)
        self._say_brake(plan)
        for node in plan.take:
            self._guarded(node, self.take_out)
        for node in plan.braked:
            self._guarded(node, self.brake)
        for node in self.view.snapshot():
            if node.health == unhealthy:
                self._guarded(node, self.follow)
        self._forget({n.name for n in self.view.snapshot() if n.health})
        if any(self.done.values()) or self.errors:
            did = ", ".join(f"{count} {what}" for what, count in self.done.items())
            failed = f"; {self.errors} API call(s) failed, tried again at the next pass" if self.errors else ""
            self.say(
                f"pass done: {did}; {plan.out_after} of {plan.in_service} GPU nodes in service out "
                f"(limit {plan.limit}){failed}"
            )
        self.metrics.passes.inc()
        self.metrics.fleet(self.view.snapshot(), plan, unhealthy)
        self.metrics.drain_states(_count(self.drain_state.values()))
        return plan

    def _guarded(self, node: Seen, step: Callable[[Seen], None]) -> None:
        if not self.leading():
            raise LostLead("the lease was not renewed in time")
        try:
            step(node)
        except KubeError as err:
            self.errors += 1
            self.metrics.api_errors.inc()
            self.say(f"node {node.name}: {err}; tried again at the next pass")

    def _columns_due(self, seen: list[Seen], now: dt.datetime) -> bool:
        """Read the Ready and cordon columns again when they are old, or before a decision: a request not
        yet served nor braked (a braked one waits for a slot, which the periodic refresh finds too)."""
        if self.columns_at is None or (now - self.columns_at).total_seconds() >= self.config.columns_s:
            return True
        return any(
            n.health == nodes.FAILING and self.shown.get(n.name, ("", ""))[:2] != ("False", BRAKED) for n in seen
        )

    # -- taking out -------------------------------------------------------------------------------

    def take_out(self, seen: Seen) -> None:
        now = self.wall()
        try:
            node = self.api.get_node(seen.name)
        except KubeError as err:
            if err.status == 404:
                return  # gone from the cluster
            raise
        written = actions.update(self.api, seen.name, lambda n: nodes.take_out_patch(n, self.marks, now), read=node)
        labels, annotations = nodes.labels_of(written), nodes.annotations_of(written)
        if labels.get(self.marks.unhealthy_label.key) != self.marks.unhealthy_label.value:
            return  # no longer requested (a retest came first)
        taken = str(nodes.json_annotation(annotations, nodes.CORDONED).get("time", nodes.stamp(now)))
        with self.view.lock:
            seen.health, seen.taken_text, seen.unschedulable = self.marks.unhealthy_label.value, taken, True
        self.metrics.take_outs.inc()
        self.done["taken out"] += 1
        was = nodes.json_annotation(annotations, nodes.CORDONED).get("was_cordoned")
        before = " (it was cordoned already, and stays so after a retest)" if was else ""
        requested = nodes.json_annotation(annotations, nodes.REQUESTED)
        why = f"{requested.get('by', 'a request')}: {requested.get('reason', '')}".rstrip(": ")
        message = (
            f"taken out of service{before}: cordoned, tainted {self.marks.unhealthy_taint}, labelled "
            f"{self.marks.unhealthy_label}; severity {seen.severity or nodes.FAIL}; asked by {why}"
        )
        self.say(f"node {seen.name}: {message}")
        self._announce(seen, "True", TAKEN_OUT, message, taken, event=("GPUBurnInTakenOut", taken, True), node=written)

    def brake(self, seen: Seen) -> None:
        since = self._since(seen, seen.requested_text)
        message = f"not taken out: the brake holds ({self._brake_words()}); the request of {since} waits, oldest first"
        if self._announce(seen, "False", BRAKED, message, since, event=("GPUBurnInBraked", since, True)):
            self.done["braked"] += 1

    def follow(self, seen: Seen) -> None:
        """A node out of service by gpu-burnin: its take-out finished, its drain carried on."""
        taken = self._since(seen, seen.taken_text)
        if not self._drains(seen):
            message = f"out of service since {taken}; severity {seen.severity or nodes.FAIL}: not drained (--drain)"
            self._announce(seen, "True", TAKEN_OUT, message, taken, event=("GPUBurnInTakenOut", taken, True))
            self.drain_state.pop(seen.name, None)
            return
        if self.drain_state.get(seen.name) == DRAINED:
            return
        now = self.wall()
        if seen.name in self.next_try and now < self.next_try[seen.name]:
            return
        self._drain(seen, taken, now)

    def _drains(self, seen: Seen) -> bool:
        if self.config.drain == DRAIN_NEVER:
            return False
        return self.config.drain == DRAIN_FAIL or seen.severity == nodes.CRITICAL

    # -- draining ---------------------------------------------------------------------------------

    def _drain(self, seen: Seen, taken: str, now: dt.datetime) -> None:
        pods = [p for p in self.api.list_pods_on_node(seen.name) if _holds_gpus(p)]
        going = [p for p in pods if p["metadata"].get("deletionTimestamp")]
        left = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if not pods:
            self.drain_state[seen.name] = DRAINED
            message = f"drained: no GPU pod left on the node (out of service since {taken})"
            self._announce(seen, "True", DRAINED, message, taken, event=("GPUBurnInDrained", taken, False))
            return
        began = nodes.parse_stamp(taken) or now
        age = (now - began).total_seconds()
        force = self.config.force_after_s is not None and age >= self.config.force_after_s
        blocked: list[str] = []
        for pod in left:
            namespace, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"].get("uid", "")
            if not self.leading():
                raise LostLead("the lease was not renewed in time")
            if force:
                gone = not self.api.delete_pod(namespace, name)
                self.metrics.evictions.labels(result="gone" if gone else "forced").inc()
                if not gone:
                    after = f"{self.config.force_after_s:g} s"
                    said = f"deleted {namespace}/{name}: still on the node {after} after the take-out (--force-after)"
                    self._event(seen, "GPUBurnInForced", uid, said, warning=True)
                continue
            try:
                evicted = self.api.evict_pod(namespace, name)
            except Blocked:
                blocked.append(f"{namespace}/{name}")
                self.metrics.evictions.labels(result="blocked").inc()
                continue
            self.metrics.evictions.labels(result="evicted" if evicted else "gone").inc()
            if evicted:
                self.done["evicted"] += 1
                self._event(
                    seen, "GPUBurnInEvicted", uid, f"evicted {namespace}/{name} (its GPUs are failing)", warning=True
                )
        if blocked:
            wait = min(
                self.backoff.get(seen.name, self.config.evict_backoff_s / 2) * 2, self.config.evict_backoff_max_s
            )
            self.backoff[seen.name] = wait
            self.next_try[seen.name] = now + dt.timedelta(seconds=wait)
        else:
            self.backoff.pop(seen.name, None)
            self.next_try[seen.name] = now + dt.timedelta(seconds=self.config.recheck_s)
        if age >= self.config.drain_deadline_s:
            names = ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods)
            message = (
                f"drain overdue: {len(pods)} GPU pod(s) still on the node {age / 86400:.1f} days after the take-out "
                f"(--drain-deadline {self.config.drain_deadline_s:g} s): {names}; nothing is forced"
            )
            self.drain_state[seen.name] = OVERDUE
            self._announce(seen, "True", OVERDUE, message, taken, event=("GPUBurnInDrainOverdue", taken, True))
        elif blocked:
            self.drain_state[seen.name] = BLOCKED
            message = f"draining: a disruption budget refuses the eviction of {', '.join(blocked)} for now"
            self._announce(seen, "True", BLOCKED, message, taken, event=("GPUBurnInDrainBlocked", taken, True))
        else:
            self.drain_state[seen.name] = DRAINING
            message = f"draining: {len(going) + len(left)} GPU pod(s) evicted, waiting for them to go"
            self._announce(seen, "True", DRAINING, message, taken)

    # -- saying it --------------------------------------------------------------------------------

    def _announce(
        self,
        seen: Seen,
        status: str,
        reason: str,
        message: str,
        since: str,
        *,
        event: tuple[str, str, bool] | None = None,
        node: dict[str, Any] | None = None,
    ) -> bool:
        """The condition (and first its Event) for this state of the node, unless the node shows it: known
        from this replica's own writes, or, for a node it did not see through, read from the node once.
        Whether it wrote."""
        wanted = (status, reason, since)
        if self.shown.get(seen.name) == wanted:
            return False
        if seen.name not in self.shown and self.inherited is not None and seen.name in self.inherited:
            current = nodes.condition(node or self.api.get_node(seen.name), nodes.REMEDIATION_CONDITION) or {}
            found = (str(current.get("status")), str(current.get("reason")), str(current.get("lastTransitionTime")))
            self.shown[seen.name] = found
            if found == wanted:
                return False
        if event is not None:
            event_reason, key, warning = event
            self._event(seen, event_reason, key, message, warning=warning)
        body = {
            "status": {
                "conditions": [
                    {
                        "type": nodes.REMEDIATION_CONDITION,
                        "status": status,
                        "reason": reason,
                        "message": message[:1024],
                        "lastTransitionTime": since,
                    }
                ]
            }
        }
        self.api.patch_node_status(seen.name, body)
        self.shown[seen.name] = wanted
        return True

    def _event(self, seen: Seen, reason: str, key: str, message: str, *, warning: bool) -> None:
        target = {"metadata": {"name": seen.name, "uid": seen.uid}}
        self.api.create_event(
            nodes.event(
                target,
                namespace=self.api.namespace,
                key=key,
                warning=warning,
                reason=reason,
                message=message,
                now=self.wall(),
            )
        )

    def _since(self, seen: Seen, text: str) -> str:
        """The mark's own time, else when this replica first saw the mark: stable from pass to pass."""
        if text:
            return text
        return self.first_seen.setdefault(seen.name, nodes.stamp(self.wall()))

    def _brake_words(self) -> str:
        return (
            f"at most {self.config.max_share:g} of the GPU nodes (--max-unhealthy-share) and at most "
            f"{self.config.max_nodes} (--max-unhealthy-nodes) may be out of service"
        )

    def _say_brake(self, plan: Plan) -> None:
        """One log line when the brake starts or stops holding, or holds a different number of requests."""
        if len(plan.braked) == self._said_braked:
            return
        was, self._said_braked = self._said_braked, len(plan.braked)
        if not plan.held:
            if was:
                self.say("the brake no longer holds: every request is served")
            return
        shown = ", ".join(n.name for n in plan.braked[:5])
        more = f" (+{len(plan.braked) - 5} more)" if len(plan.braked) > 5 else ""
        self.say(
            f"BRAKE HELD: {plan.out_after} of {plan.in_service} GPU nodes in service are out, the limit is "
            f"{plan.limit} ({self._brake_words()}); {len(plan.braked)} request(s) wait, oldest first: {shown}{more}. "
            "A bad baseline or driver roll-out looks like this: check it before the nodes"
        )

    def _forget(self, marked: set[str]) -> None:
        """Drop what is known of nodes no longer marked (retested, deleted)."""
        for table in (self.shown, self.next_try, self.backoff, self.drain_state, self.first_seen):
            for name in [n for n in table if n not in marked]:
                del table[name]


def _holds_gpus(pod: dict[str, Any]) -> bool:
    """A pod that holds GPUs and that a drain moves: not a DaemonSet's, not a mirror pod, not finished."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    owners = [o.get("kind") for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if (
        status.get("phase") in ("Succeeded", "Failed")
        or "DaemonSet" in owners
        or MIRROR in (meta.get("annotations") or {})
    ):
        return False
    return _gpus(pod) > 0


def _gpus(pod: dict[str, Any]) -> int:
    spec = pod.get("spec", {})
    most = 0
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for part in ("limits", "requests"):
            try:
                most = max(most, int(str((resources.get(part) or {}).get(GPU_RESOURCE, "0"))))
            except ValueError:
                most = max(most, 1)  # a quantity we do not parse is still a GPU request
    return most


def _count(states: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    names = {DRAINING: "draining", BLOCKED: "blocked", DRAINED: "drained", OVERDUE: "overdue"}
    for state in states:
        found[names[state]] = found.get(names[state], 0) + 1
    return found


def _metrics() -> Metrics:
    from harness.remediator.metrics import Metrics  # prometheus_client: only when the remediator runs

    return Metrics()
