"""A team: the ranks of one collective test, on this node and beyond, and where they meet.

Built on harness/distributed.py (the meeting place, the MPI world): on one node this process
hosts the meeting; under MPI, rank 0's process does, on the address chosen when the job
started, and every node's process learns the job's shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from harness.distributed import Meeting, Mpi, Rendezvous


@dataclasses.dataclass(frozen=True, kw_only=True)
class Team:
    """Who takes part in a collective test: this node's devices are ranks `first_rank` on, of
    `world`; `nodes` lists every node's name and rank count in rank order. `share` exchanges a
    value between the nodes' parents (each gets every node's, in node order)."""

    rendezvous: Rendezvous
    first_rank: int
    world: int
    nodes: tuple[tuple[str, int], ...]
    share: Callable[[Any], list[Any]]

    def node_ranks(self) -> list[tuple[int, ...]]:
        """Each node's ranks, in node order."""
        found, first = [], 0
        for _, count in self.nodes:
            found.append(tuple(range(first, first + count)))
            first += count
        return found


def mpi_team(mpi: Mpi, node: str, devices: int, *, limit_s: float) -> tuple[Team, Meeting | None]:
    """The team of an MPI job: rank 0's parent hosts the meeting (on `mpi.meeting_host`, chosen
    when the job started) and every parent learns it; ranks follow MPI rank order. Every MPI
    process must call this at the same point. Returns the team and, on rank 0, the meeting to close."""
    if not mpi.meeting_host:
        mpi.choose_meeting_host("", limit_s=limit_s)
    meeting = None
    if mpi.place.rank == 0:
        meeting = Meeting(mpi.meeting_host, timeout_s=limit_s)
    rendezvous = mpi.bcast(meeting.rendezvous if meeting else None, limit_s=limit_s)
    nodes = tuple(mpi.allgather((node, devices), limit_s=limit_s))
    first = sum(count for _, count in nodes[: mpi.place.rank])
    world = sum(count for _, count in nodes)

    def share(value: Any) -> list[Any]:
        return mpi.allgather(value, limit_s=limit_s)

    return Team(rendezvous=rendezvous, first_rank=first, world=world, nodes=nodes, share=share), meeting


def local_team(node: str, devices: int, *, limit_s: float) -> tuple[Team, Meeting]:
    """The team of one node's devices, meeting at a store this process hosts."""
    meeting = Meeting(timeout_s=limit_s)
    team = Team(
        rendezvous=meeting.rendezvous, first_rank=0, world=devices, nodes=((node, devices),), share=lambda v: [v]
    )
    return team, meeting
