"""The NCCL all-reduce test, parent side: the ranks, the sweep, the attribution, the pairwise search.

One rank per device, all of them seeing the whole node (gputests/work/nccl.py is the worker
side). The parent hosts the meeting place, or, under MPI, rank 0's parent does and
the team spans every node of the job (harness/distributed.py). For each size of the
profile's sweep every rank checks, times and checks again; each records
`nccl.allreduce.<size>.busbw`, the median window's bus bandwidth as nccl-tests
defines it (`bandwidth`). A wrong reduced value is `DATA_MISMATCH` on that rank's
device.

A rank that ends without finishing (hung, crashed, raised) is the cause: the wait
ends at once, the others are stopped, and the cause's end is its finding (`HANG`
for a hang). Ranks that gave up waiting for it (`Stuck`, `PeerLost`) are only
information; if every rank is stuck and none failed, the collective itself hung
and each of them is `HANG`.

When the largest size is below the baseline floor and there are at least three
members (ranks of one node, or nodes of a job), the pairwise search
(gputests/work/pairwise.py) names the slow one, and the others are judged by the
figure of the team without it.

With one rank there is no bus: the path runs (join, check, time) and the test
reports that there is nothing to measure, incomplete only where the baseline
requires the figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Iterator, Sequence
from typing import TypeVar

from gputests.work import nccl, pairwise
from harness import distributed
from harness.devices import Device
from harness.profiles import size_label
from harness.records import Code, Direction, Remediation, Severity
from harness.workers import WorkerStatus
from harness.workers.devicetest import DeviceRun, Outcome, Scope, nothing_to_test

WINDOWS = 5
"""Timed windows per size (after one warm-up window)."""
SEARCH_TOLERANCE = 0.8
"""A pair below this share of the fastest pair is slow (gputests/work/pairwise.py)."""
ALLOWANCE_S = 30.0
"""For what is not timed: joining (NCCL's set-up), filling and checking buffers."""


def metric_name(mib: int) -> str:
    return f"nccl.allreduce.{size_label(mib)}.busbw"


def bandwidth(nbytes: int, seconds: float, world: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s of one all-reduce of `nbytes` per rank among `world` ranks, as
    nccl-tests defines them: algbw = bytes / time, busbw = algbw * 2 (n - 1) / n."""
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * 2 * (world - 1) / world


@dataclasses.dataclass
class _State:
    scope: Scope
    run: DeviceRun[nccl.Job]
    team: distributed.Team
    gave_up: dict[str, nccl.RankEnd] = dataclasses.field(default_factory=dict)
    """Ranks (by device UUID) that could not go on for want of another."""
    failed_elsewhere: list[str] = dataclasses.field(default_factory=list)
    """Other nodes whose ranks failed (under MPI)."""
    everyone_ok: bool = True
    """Whether every node's ranks answered the last step: all nodes take the same path."""

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.scope.devices

    def rank(self, device: Device) -> int:
        return self.team.first_rank + self.devices.index(device)

    def causes(self) -> list[Device]:
        """This node's ranks that ended without finishing: the cause of any wait."""
        failed = (WorkerStatus.HUNG, WorkerStatus.CRASHED, WorkerStatus.ERROR)
        return [d for d in self.devices if self.run.end(d).status in failed]

    def ok_here(self) -> bool:
        return not self.gave_up and not self.causes()

    def ok(self) -> bool:
        return self.everyone_ok


def run(scope: Scope) -> Outcome:
    devices = scope.devices
    if not devices:
        return Outcome()
    profile = scope.profile
    limit_s = profile.hang_timeout_s * 2  # past the parent's stall limit: a hung rank is found first
    with _team(scope, limit_s) as team:
        jobs = [
            nccl.Job(
                rendezvous=team.rendezvous,
                rank=team.first_rank + i,
                world=team.world,
                iterations=profile.nccl.iterations,
                windows=WINDOWS,
                join_limit_s=profile.startup_timeout_s + profile.hang_timeout_s,
                limit_s=limit_s,
            )
            for i in range(len(devices))
        ]
        busy = ALLOWANCE_S + profile.duration_s + len(profile.nccl.sizes_mib) * profile.warmup_s
        with DeviceRun(scope, nccl.worker, jobs, busy_s=busy, sees="node") as device_run:
            state = _State(scope=scope, run=device_run, team=team)
            joined = _step(state, None, nccl.Joined)
            for message in joined.values():
                device_run.outcome.facts.update(
                    {"nccl.backend": message.backend, "nccl.version": message.version, "nccl.nvls": message.nvls}
                )
            swept: dict[int, dict[Device, nccl.Swept]] = {}
            for mib in profile.nccl.sizes_mib:
                if not state.ok():
                    break
                swept[mib] = _step(state, nccl.Sweep(nbytes=mib << 20), nccl.Swept)
                _check(state, swept[mib])
            if state.ok() and team.world > 1:
                _record(state, swept)
            if state.ok():
                for device in devices:
                    device_run.send(device, nccl.Stop())
            _attribute(state)
    if team.world == 1:
        more = nothing_to_test(scope, "one rank: an all-reduce has no bus to measure", _metrics(scope))
        device_run.outcome.findings += more.findings
    return device_run.outcome


@contextlib.contextmanager
def _team(scope: Scope, limit_s: float) -> Iterator[distributed.Team]:
    wait_s = scope.profile.startup_timeout_s + limit_s
    if scope.mpi is not None:
        team, meeting = distributed.mpi_team(scope.mpi, scope.node, len(scope.devices), limit_s=wait_s)
    else:
        team, meeting = distributed.local_team(scope.node, len(scope.devices), limit_s=wait_s)
    try:
        yield team
    finally:
        if meeting is not None:
            meeting.close()


A = TypeVar("A", bound=nccl.Answer)


def _step(state: _State, command: nccl.Command | None, kind: type[A]) -> dict[Device, A]:
    """Send `command` to every rank of this node and collect their answers, until all have answered
    or one has ended without finishing; then learn how the other nodes fared."""
    if command is not None:
        for device in state.devices:
            state.run.send(device, command)
    answers: dict[Device, A] = {}
    for device, message in state.run.messages(until=nccl.Answer, together=True):
        if isinstance(message, nccl.RankEnd):
            state.gave_up[device.uuid] = message
        elif isinstance(message, kind):
            answers[device] = message
    every = state.team.share((state.scope.node, bool(state.causes()), state.ok_here()))
    state.failed_elsewhere = [node for node, failed, _ in every if failed and node != state.scope.node]
    state.everyone_ok = all(ok for _, _, ok in every)
    return answers


def _check(state: _State, answers: dict[Device, nccl.Swept]) -> None:
    for device, swept in answers.items():
        if swept.bad:
            state.run.finding(
                device,
                Code.DATA_MISMATCH,
                Severity.FAIL,
                f"rank {state.rank(device)}: {swept.bad} of {swept.checked} all-reduced values of "
                f"{swept.nbytes >> 20} MiB were wrong, the first at element {swept.first_bad}",
                Remediation.INSPECT_HARDWARE,
                metric=metric_name(swept.nbytes >> 20),
                rank=state.rank(device),
                bad_values=swept.bad,
                checked=swept.checked,
                first_bad=swept.first_bad,
            )


def _record(state: _State, swept: dict[int, dict[Device, nccl.Swept]]) -> None:
    world = state.team.world
    largest = max(swept)
    slow = any(state.team.share(_slow(state, largest, swept[largest])))  # every node searches, or none
    judged = _search(state, largest) if slow else {}
    for mib, answers in swept.items():
        for device, answer in answers.items():
            seconds = judged.get(device, (world, answer.seconds)) if mib == largest else (world, answer.seconds)
            ranks, windows = seconds
            busbw = [bandwidth(answer.nbytes, s, ranks)[1] for s in windows]
            state.run.measure(device, metric_name(mib), busbw, "GB/s", Direction.HIGHER)


def _slow(state: _State, mib: int, answers: dict[Device, nccl.Swept]) -> bool:
    """Whether the team's figure at `mib` is below some rank's baseline floor."""
    metric = metric_name(mib)
    for device, answer in answers.items():
        baseline = state.scope.baselines.get(device.uuid)
        spec = baseline.metrics.get(metric) if baseline is not None else None
        figure = statistics.median(bandwidth(answer.nbytes, s, state.team.world)[1] for s in answer.seconds)
        if spec is not None and not spec.meets_limit(figure):
            return True
    return False


def _search(state: _State, mib: int) -> dict[Device, tuple[int, tuple[float, ...]]]:
    """The pairwise search among the team's members (its nodes, or one node's ranks). Names the
    slow members, and returns the figures the others are judged by instead (the team without
    them): per device, the ranks timed together and their seconds per all-reduce."""
    team = state.team
    members: list[tuple[int, ...]] = team.node_ranks() if len(team.nodes) > 1 else [(r,) for r in range(team.world)]
    if len(members) < 3:
        return {}
    nbytes = mib << 20

    def measure(pairs: Sequence[pairwise.Pair]) -> list[float]:
        sets = tuple(tuple(sorted(members[a] + members[b])) for a, b in pairs)
        timed = _set_seconds(state, sets, nbytes)
        return [bandwidth(nbytes, timed[ranks], len(ranks))[1] for ranks in sets]

    found = pairwise.search(len(members), measure, tolerance=SEARCH_TOLERANCE)
    if not found.culprits or not state.ok():
        return {}
    name = _member_names(state, members)
    trials = found.describe(lambda m: name[m])
    bad_ranks = {r: m for m in found.culprits for r in members[m]}
    for device in state.devices:
        if state.rank(device) in bad_ranks:
            state.run.finding(
                device,
                Code.LOW_THROUGHPUT,
                Severity.FAIL,
                f"the pairwise search names {name[bad_ranks[state.rank(device)]]} as the slow member of the "
                f"all-reduce of {mib} MiB: every pair with it was slow ({trials})",
                Remediation.INSPECT_HARDWARE,
                metric=metric_name(mib),
                rank=state.rank(device),
                trials=[{"pair": [name[t.pair[0]], name[t.pair[1]]], "busbw": t.busbw} for t in found.trials],
            )
    rest = tuple(r for r in range(team.world) if r not in bad_ranks)
    if len(rest) < 2:
        return {}
    answers = _step(state, nccl.Measure(sets=(rest,), nbytes=nbytes), nccl.Timed)
    return {d: (len(rest), t.seconds) for d, t in answers.items() if t.seconds}


def _set_seconds(state: _State, sets: tuple[tuple[int, ...], ...], nbytes: int) -> dict[tuple[int, ...], float]:
    """Each set's seconds per all-reduce (the median over its ranks of their median windows),
    every node's ranks included."""
    answers = _step(state, nccl.Measure(sets=sets, nbytes=nbytes), nccl.Timed)
    local = [(t.ranks, statistics.median(t.seconds)) for t in answers.values() if t.seconds]
    every = [item for node in state.team.share(local) for item in node]
    per_set: dict[tuple[int, ...], list[float]] = {}
    for ranks, seconds in every:
        per_set.setdefault(tuple(ranks), []).append(seconds)
    return {ranks: statistics.median(per_set.get(ranks, [float("inf")])) for ranks in sets}


def _member_names(state: _State, members: list[tuple[int, ...]]) -> list[str]:
    if len(state.team.nodes) > 1:
        return [node for node, _ in state.team.nodes]
    return [f"rank {r} ({state.devices[r - state.team.first_rank].label})" for (r,) in members]


def _attribute(state: _State) -> None:
    """Who made the ranks wait: the causes have their own findings (as every worker's end); the
    ranks that gave up are information beside them, or, with no cause anywhere, hung themselves.
    A node whose ranks failed nowhere but whose team lost another node's is incomplete: its
    all-reduce never finished."""
    causes = state.causes()
    named = [f"rank {state.rank(d)} ({d.label})" for d in causes] + [f"node {n}" for n in state.failed_elsewhere]
    if named:
        state.run.stop(f"the all-reduce cannot go on without {', '.join(named)}")
    if state.failed_elsewhere and not causes:
        for device in state.devices:
            text = f"rank {state.rank(device)}: the all-reduce could not finish without {', '.join(named)}"
            state.run.finding(device, Code.TEST_ERROR, Severity.INCOMPLETE, text, Remediation.RERUN)
    for device in state.devices:
        message = state.gave_up.get(device.uuid)
        if message is None:
            continue
        what = f"{message.what} ({message.waited_s:.0f} s)" if isinstance(message, nccl.Stuck) else str(message)
        if isinstance(message, nccl.PeerLost):
            what = message.error
        if named:
            text = f"rank {state.rank(device)} gave up waiting for {', '.join(named)}: {what}"
            state.run.finding(device, Code.HANG, Severity.INFO, text, rank=state.rank(device))
        elif isinstance(message, nccl.Stuck):
            text = f"rank {state.rank(device)}: {what}, with no rank failed: the collective itself hung"
            state.run.finding(device, Code.HANG, Severity.FAIL, text, Remediation.RESET_GPU, rank=state.rank(device))
        else:
            text = f"rank {state.rank(device)}: the all-reduce failed: {what}"
            state.run.finding(device, Code.TEST_ERROR, Severity.INCOMPLETE, text, Remediation.RERUN)


def _metrics(scope: Scope) -> list[str]:
    return [metric_name(mib) for mib in scope.profile.nccl.sizes_mib]
