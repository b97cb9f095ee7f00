"""The brake: which requests to take a node out are served now, decided for the whole fleet at once.

Out of service counts every GPU node in service that is out for any reason: taken out by
gpu-burnin (health `unhealthy`), cordoned by someone else, or NotReady. Nodes still in
preflight are not in service, so they count neither as out nor in the whole. At most
`max_share` of the GPU nodes and at most `max_nodes` may be out, and always at least
one: a fleet of ten may take out its one bad node. Requests are served oldest first (the
time in `gpu-burnin/requested`; requests without one come last, by name); a requesting
node that is out already (cordoned by someone else, NotReady) or not yet in service (in
preflight, where the watch runs too) is taken out at no cost.
The rest wait, braked, until the count falls (retest), then the oldest go first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable

from harness.kube import node as nodes

LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(slots=True)
class Seen:
    """A GPU node as the remediator knows it: a few fields of its metadata, and two of its Table row."""

    name: str
    uid: str = ""
    health: str = ""
    """The health label: "", "failing" (requested) or the unhealthy value (taken out)."""
    severity: str = ""
    requested: dt.datetime | None = None
    requested_text: str = ""
    """The request's time as written: what names its Braked Event."""
    taken_text: str = ""
    """The take-out's time as gpu-burnin/cordoned records it ("" when there is no record)."""
    preflight: bool = False
    ready: bool = True
    unschedulable: bool = False

    @property
    def taken_at(self) -> dt.datetime | None:
        return nodes.parse_stamp(self.taken_text) if self.taken_text else None

    def out(self, unhealthy: str) -> bool:
        return self.health == unhealthy or self.unschedulable or not self.ready


@dataclasses.dataclass(frozen=True)
class Plan:
    limit: int
    """How many GPU nodes may be out of service."""
    in_service: int
    """GPU nodes in the whole (not in preflight)."""
    out: int
    """Out of service before this plan."""
    out_after: int
    """Out of service once it is carried out."""
    take: tuple[Seen, ...]
    """Requests served now, oldest first."""
    braked: tuple[Seen, ...]
    """Requests that wait, oldest first."""

    @property
    def held(self) -> bool:
        return bool(self.braked)


def limit(in_service: int, max_share: float, max_nodes: int) -> int:
    """The most GPU nodes that may be out: the share (rounded down) and the count, and never less than one."""
    by_share = math.floor(max_share * in_service + 1e-9)  # 0.29 * 100 is 28.999999999999996
    return max(1, min(by_share, max_nodes))


def plan(fleet: Iterable[Seen], *, max_share: float, max_nodes: int, unhealthy: str) -> Plan:
    fleet = list(fleet)
    serving = [n for n in fleet if not n.preflight]
    allowed = limit(len(serving), max_share, max_nodes)
    out = sum(1 for n in serving if n.out(unhealthy))
    room = max(0, allowed - out)
    requests = sorted(
        (n for n in fleet if n.health == nodes.FAILING),
        key=lambda n: (n.requested is None, n.requested or LATEST, n.name),
    )
    take: list[Seen] = []
    braked: list[Seen] = []
    added = 0
    for node in requests:
        if node.preflight or node.out(unhealthy):
            take.append(node)  # out already, or never in: taking it out costs nothing
        elif added < room:
            take.append(node)
            added += 1
        else:
            braked.append(node)
    return Plan(
        limit=allowed,
        in_service=len(serving),
        out=out,
        out_after=out + added,
        take=tuple(take),
        braked=tuple(braked),
    )
