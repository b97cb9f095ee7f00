"""What the remediator is told: its options as one checked, typed object (docs/kubernetes.md)."""

from __future__ import annotations

import dataclasses

from harness.errors import ConfigError
from harness.kube.node import Marks
from harness.remediator.leader import Timing

DRAIN_CRITICAL, DRAIN_FAIL, DRAIN_NEVER = "critical", "fail", "never"
DRAINS = (DRAIN_CRITICAL, DRAIN_FAIL, DRAIN_NEVER)
WEEK_S = 7 * 24 * 3600.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Every option of `gpu-burnin remediator`; the defaults are the command line's."""

    identity: str
    """This replica's name in the Lease (the pod's name)."""
    marks: Marks = Marks()
    gpu_selector: str = "nvidia.com/gpu.present=true"
    max_share: float = 0.05
    """The brake: at most this share of the GPU nodes in service out of service..."""
    max_nodes: int = 50
    """...and at most this many; always at least one."""
    drain: str = DRAIN_CRITICAL
    """Whose GPU pods are evicted once the node is out: critical failures', every failure's, or none."""
    drain_deadline_s: float = WEEK_S
    """A drain still unfinished this long after the take-out is reported overdue (a Warning Event, the
    condition, a metric); nothing is forced."""
    force_after_s: float | None = None
    """When set: GPU pods still on a drained node this long after the take-out are deleted, past their
    disruption budgets (needs `delete pods`, which the base RBAC does not grant)."""
    lease_name: str = "gpu-burnin-remediator"
    timing: Timing = Timing()
    interval_s: float = 10.0
    """The longest between two passes; a change seen on the watch starts one sooner."""
    settle_s: float = 1.0
    """After a change, wait this long for the changes that come with it (a roll-out labels hundreds of
    nodes within a second) before deciding, so that they are decided together."""
    columns_s: float = 60.0
    """Refresh the nodes' Ready and cordon columns at least this often, and before any decision."""
    recheck_s: float = 30.0
    """How often a draining node's pods are listed again."""
    evict_backoff_s: float = 10.0
    """After a disruption budget refuses an eviction (429), wait this long before the node's next try,
    doubling to `evict_backoff_max_s`."""
    evict_backoff_max_s: float = 600.0
    metrics_port: int = 9402
    """0: no /metrics."""

    def __post_init__(self) -> None:
        if not self.identity:
            raise ConfigError("name this replica: --identity, or POD_NAME from the downward API", option="--identity")
        if not 0.0 <= self.max_share <= 1.0:
            problem = f"is {self.max_share}; expected a fraction from 0 to 1"
            raise ConfigError(problem, option="--max-unhealthy-share")
        if self.max_nodes < 1:
            raise ConfigError(f"is {self.max_nodes}; expected at least 1", option="--max-unhealthy-nodes")
        if self.drain not in DRAINS:
            raise ConfigError(f"is {self.drain!r}; expected one of {', '.join(DRAINS)}", option="--drain")
        if not self.drain_deadline_s > 0:
            raise ConfigError(
                f"is {self.drain_deadline_s}; expected a positive number of seconds", option="--drain-deadline"
            )
        if self.force_after_s is not None and not self.force_after_s > 0:
            raise ConfigError(f"is {self.force_after_s}; expected a positive number of seconds", option="--force-after")
        timing = self.timing
        if not timing.lease_s > timing.renew_deadline_s > timing.retry_s > 0:
            raise ConfigError(
                f"the lease ({timing.lease_s:g} s) must outlast the renew deadline ({timing.renew_deadline_s:g} s), "
                f"which must outlast the retry period ({timing.retry_s:g} s): else two replicas may act at once",
                option="--lease-duration",
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"is {self.metrics_port}; expected a port from 1 to 65535, or 0", option="--metrics-port")
