"""The remediator's /metrics (built with harness/metrics.py's Exporter, the one prometheus_client user).

gpu_burnin_remediator_leader                   1 while this replica holds the Lease
gpu_burnin_remediator_nodes{state}             GPU nodes by state: in_service, preflight, requested
                                               (failing, waiting), taken_out, cordoned_elsewhere, not_ready
gpu_burnin_remediator_brake_held               1 while requests wait on the brake
gpu_burnin_remediator_brake_limit              how many GPU nodes may be out of service
gpu_burnin_remediator_braked_nodes             requests waiting on the brake
gpu_burnin_remediator_take_outs_total          nodes taken out by this replica
gpu_burnin_remediator_evictions_total{result}  evicted, blocked (a disruption budget's 429), gone, forced
gpu_burnin_remediator_drains{state}            draining, blocked, drained, overdue
gpu_burnin_remediator_passes_total             reconcile passes
gpu_burnin_remediator_api_errors_total         API calls that failed for good in a pass
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.metrics import Exporter
from harness.remediator.brake import Plan, Seen

STATES = ("in_service", "preflight", "requested", "taken_out", "cordoned_elsewhere", "not_ready")
DRAINS = ("draining", "blocked", "drained", "overdue")
EVICTIONS = ("evicted", "blocked", "gone", "forced")


class Metrics:
    def __init__(self) -> None:
        self.exporter = Exporter()
        gauge, counter = self.exporter.gauge, self.exporter.counter
        self.leader = gauge("gpu_burnin_remediator_leader", "1 while this replica holds the Lease")
        self.nodes = gauge("gpu_burnin_remediator_nodes", "GPU nodes by state", ["state"])
        self.brake_held = gauge("gpu_burnin_remediator_brake_held", "1 while requests wait on the brake")
        self.brake_limit = gauge("gpu_burnin_remediator_brake_limit", "How many GPU nodes may be out of service")
        self.braked = gauge("gpu_burnin_remediator_braked_nodes", "Requests to take a node out waiting on the brake")
        self.take_outs = counter("gpu_burnin_remediator_take_outs", "Nodes taken out of service by this replica")
        self.evictions = counter("gpu_burnin_remediator_evictions", "Evictions of GPU pods, by result", ["result"])
        self.drains = gauge("gpu_burnin_remediator_drains", "Nodes being drained, by state", ["state"])
        self.passes = counter("gpu_burnin_remediator_passes", "Reconcile passes")
        self.api_errors = counter("gpu_burnin_remediator_api_errors", "API calls that failed for good in a pass")
        for state in STATES:
            self.nodes.labels(state=state).set(0)
        for state in DRAINS:
            self.drains.labels(state=state).set(0)
        for result in EVICTIONS:
            self.evictions.labels(result=result)

    def fleet(self, seen: Iterable[Seen], plan: Plan, unhealthy: str) -> None:
        counts = dict.fromkeys(STATES, 0)
        for node in seen:
            if node.preflight:
                counts["preflight"] += 1
            elif node.health == unhealthy:
                counts["taken_out"] += 1
            elif node.unschedulable:
                counts["cordoned_elsewhere"] += 1
            elif not node.ready:
                counts["not_ready"] += 1
            elif node.health:
                counts["requested"] += 1
            else:
                counts["in_service"] += 1
        for state, count in counts.items():
            self.nodes.labels(state=state).set(count)
        self.brake_held.set(1 if plan.held else 0)
        self.brake_limit.set(plan.limit)
        self.braked.set(len(plan.braked))

    def drain_states(self, counts: dict[str, int]) -> None:
        for state in DRAINS:
            self.drains.labels(state=state).set(counts.get(state, 0))
