"""The NCCL all-reduce test, parent side: the ranks, the sweep, the attribution, the pairwise search.

One rank per device, all of them seeing the whole node (gputests/work/nccl.py is the worker
side). The parent hosts the meeting place, or, under MPI, rank 0's parent does and
the team spans every node of the job (harness/team.py). For each size of the
profile's sweep every rank checks and times windows; the figure is the slowest rank's
per window, the median window's bus bandwidth as nccl-tests defines it
(`bandwidth`), one figure for the team, recorded on each of its devices:
`nccl.allreduce.<size>.busbw` within one node (the node's own ranks, each node at
once), and, when the job spans nodes, `nccl.allreduce.multinode.<size>.busbw` across
all of them. The host fact `nccl.nvls` says whether NCCL ran the node's all-reduces on
NVLink SHARP, from its own log after the sweep; a node whose figure misses its floor
without it is told so. A wrong reduced value is `DATA_MISMATCH` on that rank's device.

A rank that ends without finishing (hung, crashed, raised) is the cause: the wait
ends at once, the others are stopped, and the cause's end is its finding (`HANG`
for a hang). Ranks that gave up waiting for it (`Stuck`, `PeerLost`) are only
information; if every rank is stuck in a collective and none failed, the collective
itself hung and each of them is `HANG`. Ranks that never all met (`NotJoined`) are
the network's or the set-up's problem, not the GPUs': incomplete, check-config.

When the largest size is below the baseline floor and there are at least three
members (ranks of one node, or nodes of a job), the pairwise search
(gputests/work/pairwise.py) names the slow one, and the others are judged by the
figure of the team without it.

With one rank on a node there is no bus within it: the path runs (join, check, time)
and the test reports that there is nothing to measure, incomplete only where the
baseline requires the figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from typing import TypeVar

from gputests.work import nccl, pairwise
from harness import team as teams
from harness.devices import Device
from harness.groups import NcclSection
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


def metric_name(mib: int, *, across: bool = False) -> str:
    """The node's figure, or with `across` the figure of the job's ranks across its nodes."""
    return f"nccl.allreduce.{'multinode.' if across else ''}{size_label(mib)}.busbw"


def bandwidth(nbytes: int, seconds: float, world: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s of one all-reduce of `nbytes` per rank among `world` ranks, as
    nccl-tests defines them: algbw = bytes / time, busbw = algbw * 2 (n - 1) / n."""
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * 2 * (world - 1) / world


@dataclasses.dataclass
class _State:
    scope: Scope
    run: DeviceRun[nccl.Job]
    team: teams.Team
    gave_up: dict[str, nccl.RankEnd] = dataclasses.field(default_factory=dict)
    """Ranks (by device UUID) that could not go on for want of another."""
    failed_elsewhere: list[str] = dataclasses.field(default_factory=list)
    """Other nodes whose ranks failed (under MPI)."""
    everyone_ok: bool = True
    """Whether every node's ranks answered the last step: all nodes take the same path."""

    @property
    def devices(self) -> tuple[Device, ...]:
        return self.scope.devices

    @property
    def across_nodes(self) -> bool:
        return len(self.team.nodes) > 1

    def rank(self, device: Device) -> int:
        return self.team.first_rank + self.devices.index(device)

    def ranks(self, across: bool) -> int:
        """How many ranks an all-reduce of this scope spans."""
        return self.team.world if across else len(self.devices)

    def causes(self) -> list[Device]:
        """This node's ranks that ended without finishing: the cause of any wait."""
        failed = (WorkerStatus.HUNG, WorkerStatus.CRASHED, WorkerStatus.ERROR)
        return [d for d in self.devices if self.run.end(d).status in failed]

    def ok_here(self) -> bool:
        return not self.gave_up and not self.causes()

    def ok(self) -> bool:
        return self.everyone_ok


Sweeps = dict[tuple[bool, int], dict[Device, nccl.Swept]]
"""The answers of each sweep, by (across nodes, MiB)."""


def run(scope: Scope) -> Outcome:
    devices = scope.devices
    if not devices:
        return Outcome()
    profile = scope.profile
    limit_s = profile.hang_timeout_s * 2  # past the parent's stall limit: a hung rank is found first
    with _team(scope, limit_s) as team, _log_dir() as log_dir:
        jobs = [
            nccl.Job(
                rendezvous=team.rendezvous,
                rank=team.first_rank + i,
                world=team.world,
                iterations=profile.section(NcclSection).iterations,
                windows=WINDOWS,
                join_limit_s=profile.startup_timeout_s + profile.hang_timeout_s,
                limit_s=limit_s,
                nodes=tuple(team.node_ranks()) if len(team.nodes) > 1 else (),
                log_dir=log_dir,
            )
            for i in range(len(devices))
        ]
        scopes = (False, True) if len(team.nodes) > 1 else (False,)
        sweeps = len(profile.section(NcclSection).sizes_mib) * len(scopes)
        busy = ALLOWANCE_S + profile.duration_s + sweeps * profile.warmup_s
        with DeviceRun(scope, nccl.worker, jobs, busy_s=busy, sees="node") as device_run:
            state = _State(scope=scope, run=device_run, team=team)
            joined = _step(state, None, nccl.Joined)
            for message in joined.values():
                nvls = "unknown" if message.backend == "nccl" else "no"
                facts = {"nccl.backend": message.backend, "nccl.version": message.version, "nccl.nvls": nvls}
                device_run.outcome.facts.update(facts)
            swept: Sweeps = {}
            for mib in profile.section(NcclSection).sizes_mib:
                for across in scopes:
                    if state.ok():
                        swept[(across, mib)] = _step(state, nccl.Sweep(nbytes=mib << 20, across=across), nccl.Swept)
                        _check(state, swept[(across, mib)])
            if state.ok() and team.world > 1:
                _record(state, swept)
            if state.ok():
                for device in devices:
                    device_run.send(device, nccl.Stop())
            _attribute(state)
    if len(devices) == 1:
        why = "one rank on this node: an all-reduce within it has no bus to measure"
        more = nothing_to_test(scope, why, _metrics(scope))
        device_run.outcome.findings += more.findings
    return device_run.outcome


@contextlib.contextmanager
def _team(scope: Scope, limit_s: float) -> Iterator[teams.Team]:
    wait_s = scope.profile.startup_timeout_s + limit_s
    if scope.mpi is not None:
        team, meeting = teams.mpi_team(scope.mpi, scope.node, len(scope.devices), limit_s=wait_s)
    else:
        team, meeting = teams.local_team(scope.node, len(scope.devices), limit_s=wait_s)
    try:
        yield team
    finally:
        if meeting is not None:
            meeting.close()


@contextlib.contextmanager
def _log_dir() -> Iterator[str]:
    """A directory for the ranks' NCCL logs, removed after the test whatever became of the ranks
    (a rank killed for a hang cannot clean up after itself)."""
    path = tempfile.mkdtemp(prefix="gpu-burnin-nccl-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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


def _check(state: _State, answers: dict[Device, nccl.Swept] | dict[Device, nccl.Timed], metric: str = "") -> None:
    for device, answer in answers.items():
        if not answer.bad:
            continue
        if isinstance(answer, nccl.Swept):
            metric = metric_name(answer.nbytes >> 20, across=answer.across)
        state.run.finding(
            device,
            Code.DATA_MISMATCH,
            Severity.FAIL,
            f"rank {state.rank(device)}: {answer.bad} of {answer.checked} all-reduced values ({metric}) were "
            f"wrong, the first at element {answer.first_bad}",
            Remediation.INSPECT_HARDWARE,
            metric=metric,
            rank=state.rank(device),
            bad_values=answer.bad,
            checked=answer.checked,
            first_bad=answer.first_bad,
        )


def _record(state: _State, swept: Sweeps) -> None:
    for across in sorted({a for a, _ in swept}):
        ranks = state.ranks(across)
        if ranks < 2:
            continue
        sizes = {mib: answers for (a, mib), answers in swept.items() if a == across}
        largest = max(sizes)
        judged = {}
        searchable = across or not state.across_nodes  # a node's own search would need every node in step
        if searchable and any(state.team.share(_slow(state, sizes[largest], ranks))):  # every node, or none
            judged = _search(state, largest, across)
        for mib, answers in sizes.items():
            for device, answer in answers.items():
                own = (ranks, answer.seconds)
                count, windows = judged.get(device, own) if mib == largest else own
                busbw = [bandwidth(answer.nbytes, s, count)[1] for s in windows]
                state.run.measure(device, metric_name(mib, across=across), busbw, "GB/s", Direction.HIGHER)
    if len(state.devices) > 1:  # NVLS needs two GPUs of a node at least
        _record_nvls(state, swept)


def _record_nvls(state: _State, swept: Sweeps) -> None:
    """Whether NCCL ran this node's all-reduces on NVLS, after the whole sweep (NCCL decides per
    size, and sets NVLS up lazily), from the rank 0 of its communicator, where NCCL logs its
    choices. An 8-GPU NVSwitch board's floors lie above what NCCL reaches without NVLS (Ring):
    where the node's figure misses its floor and NCCL ran no all-reduce on NVLS, each GPU is told why."""
    node = {mib: answers for (across, mib), answers in swept.items() if not across}
    said = {answer.nvls for answers in node.values() for answer in answers.values()}
    nvls = "yes" if "yes" in said else "no" if "no" in said else "unknown"
    facts = state.run.outcome.facts
    if facts.get("nccl.backend") != "nccl" or not node:
        return
    facts["nccl.nvls"] = nvls
    largest = max(node)
    metric = metric_name(largest)
    for device, answer in node[largest].items():
        baseline = state.scope.baselines.get(device.uuid)
        spec = baseline.metrics.get(metric) if baseline else None
        figure = statistics.median(bandwidth(answer.nbytes, s, state.ranks(False))[1] for s in answer.seconds)
        if nvls == "no" and spec is not None and not spec.meets_limit(figure):
            text = (
                f"{metric} = {figure:.4g} GB/s with NCCL running none of the node's all-reduces on NVLink SHARP "
                "(NVLS), which an NVSwitch board's floor assumes: check that nvidia-fabricmanager runs, that the "
                "driver offers multicast, and that NCCL_NVLS_ENABLE and NCCL_ALGO do not exclude NVLS"
            )
            state.run.finding(device, Code.LOW_THROUGHPUT, Severity.INFO, text, metric=metric, nvls=nvls)


def _slow(state: _State, answers: dict[Device, nccl.Swept], ranks: int) -> bool:
    """Whether the team's figure is below some rank's baseline floor."""
    for device, answer in answers.items():
        baseline = state.scope.baselines.get(device.uuid)
        spec = baseline.metrics.get(metric_name(answer.nbytes >> 20, across=answer.across)) if baseline else None
        figure = statistics.median(bandwidth(answer.nbytes, s, ranks)[1] for s in answer.seconds)
        if spec is not None and not spec.meets_limit(figure):
            return True
    return False


def _search(state: _State, mib: int, across: bool) -> dict[Device, tuple[int, tuple[float, ...]]]:
    """The pairwise search among the team's members (its nodes, or one node's ranks). Names the
    slow members, and returns the figures the others are judged by instead (the team without
    them): per device, the ranks timed together and their seconds per all-reduce."""
    team = state.team
    members: list[tuple[int, ...]] = team.node_ranks() if across else [(r,) for r in range(team.world)]
    if len(members) < 3:
        return {}
    nbytes = mib << 20
    metric = metric_name(mib, across=across)

    def measure(pairs: Sequence[pairwise.Pair]) -> list[float]:
        sets = tuple(tuple(sorted(members[a] + members[b])) for a, b in pairs)
        timed = _set_seconds(state, sets, nbytes, metric)
        return [bandwidth(nbytes, timed[ranks], len(ranks))[1] for ranks in sets]

    found = pairwise.search(len(members), measure, tolerance=SEARCH_TOLERANCE)
    if not found.culprits or not state.ok():
        return {}
    name = _member_names(state, members, across)
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
                metric=metric,
                rank=state.rank(device),
                trials=[{"pair": [name[t.pair[0]], name[t.pair[1]]], "busbw": t.busbw} for t in found.trials],
            )
    rest = tuple(r for r in range(team.world) if r not in bad_ranks)
    if len(rest) < 2:
        return {}
    answers = _step(state, nccl.Measure(sets=(rest,), nbytes=nbytes), nccl.Timed)
    _check(state, answers, metric)
    return {d: (len(rest), t.seconds) for d, t in answers.items() if t.seconds}


def _set_seconds(
    state: _State, sets: tuple[tuple[int, ...], ...], nbytes: int, metric: str
) -> dict[tuple[int, ...], float]:
    """Each set's seconds per all-reduce (its slowest rank's, the median window), every node's
    ranks included."""
    answers = _step(state, nccl.Measure(sets=sets, nbytes=nbytes), nccl.Timed)
    _check(state, answers, metric)
    local = [(t.ranks, statistics.median(t.seconds)) for t in answers.values() if t.seconds]
    every = [item for node in state.team.share(local) for item in node]
    per_set: dict[tuple[int, ...], list[float]] = {}
    for ranks, seconds in every:
        per_set.setdefault(tuple(ranks), []).append(seconds)
    return {ranks: max(per_set.get(ranks, [float("inf")])) for ranks in sets}


def _member_names(state: _State, members: list[tuple[int, ...]], across: bool) -> list[str]:
    if across:
        return [node for node, _ in state.team.nodes]
    return [f"rank {r} ({state.devices[r - state.team.first_rank].label})" for (r,) in members]


def _attribute(state: _State) -> None:
    """Who made the ranks wait: the causes have their own findings (as every worker's end); the
    ranks that gave up are information beside them, or, with no cause anywhere, hung themselves.
    A node whose ranks failed nowhere but whose team lost another node's is incomplete: its
    all-reduce never finished. Ranks that never all met are incomplete: the set-up's problem."""
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
        rank = state.rank(device)
        what = message.error if isinstance(message, nccl.PeerLost) else str(message)
        if isinstance(message, nccl.Stuck | nccl.NotJoined):
            what = f"{message.what} ({message.waited_s:.0f} s)"
        if named:
            text = f"rank {rank} gave up waiting for {', '.join(named)}: {what}"
            state.run.finding(device, Code.HANG, Severity.INFO, text, rank=rank)
        elif isinstance(message, nccl.NotJoined):
            text = (
                f"rank {rank}: {what}: the {state.team.world} ranks never all met at "
                f"{state.team.rendezvous.host}:{state.team.rendezvous.port} (a rank or node that never started, "
                "the meeting address, the network or a firewall between the nodes); the GPUs were not judged"
            )
            state.run.finding(device, Code.TEST_ERROR, Severity.INCOMPLETE, text, Remediation.CHECK_CONFIG, rank=rank)
        elif isinstance(message, nccl.Stuck):
            text = f"rank {rank}: {what}, with no rank failed: the collective itself hung"
            state.run.finding(device, Code.HANG, Severity.FAIL, text, Remediation.RESET_GPU, rank=rank)
        else:
            text = f"rank {rank}: the all-reduce failed: {what}"
            state.run.finding(device, Code.TEST_ERROR, Severity.INCOMPLETE, text, Remediation.RERUN)


def _metrics(scope: Scope) -> list[str]:
    """The figures a node's own all-reduce gives."""
    return [metric_name(mib) for mib in scope.profile.section(NcclSection).sizes_mib]
