"""Device-test scaffolding: everything a test that burns devices shares.

A device test is three files (docs/design.md, "How to add a test"): the pytest test,
its parent side (what it asks each device, what it makes of the answers) and its
worker side (the code that runs on one device). This module is the rest:

- parent side, `DeviceRun`: one worker process per device with limits derived
  from the profile, typed messages in and out, every way a worker can end
  (hung, crashed, raised, a phase that failed or is unsupported, a fault that was
  never applied) turned into findings, and findings that name the device;
- worker side, `Context`: the device as torch sees it, progress, messages, phases
  that fail alone, and the fault point where `--gpu-inject` faults fire.

The parent never touches CUDA; torch is imported only inside the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from harness.baselines import Baseline
from harness.devices import PCI_ORDER, Device
from harness.profiles import Profile
from harness.records import Code, Direction, Finding, Measurement, Remediation, Severity
from harness.workers import Channel, Done, Message, Overdue, Progress, WorkerEnd, WorkerGroup, WorkerStatus, faults
from harness.workers.faults import Fault

if TYPE_CHECKING:
    import torch

    from harness.distributed import Mpi

J = TypeVar("J")
M = TypeVar("M", bound=Message)
INTERRUPTED = "the run was interrupted"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scope:
    """What one device test runs on: the `burnin` fixture gives it; our own tests build it."""

    devices: tuple[Device, ...]
    profile: Profile
    test: str
    """The pytest node id."""
    group: str
    """The test group (its marker); the first part of its metric names."""
    faults: Mapping[int, Fault] = dataclasses.field(default_factory=dict)
    """Faults to inject, by device index."""
    on_progress: Callable[[Device, Progress], None] | None = None
    """Called with every progress message, for progress lines."""
    on_outcome: Callable[[Outcome], None] | None = None
    """Called with each device run's outcome as the run starts: it fills in as figures arrive,
    so a run interrupted in the middle of a test keeps what the test had measured."""
    baselines: Mapping[str, Baseline | None] = dataclasses.field(default_factory=dict)
    """Each device's baseline by UUID, for a test whose findings depend on what its model
    requires (the baselines judge the figures afterwards, in any case)."""

    node: str = ""
    """This node's name, for tests that span nodes."""
    mpi: Mpi | None = None
    """The MPI world when an MPI launcher started the job: collective tests span its nodes."""

    def requires(self, device: Device, metric: str) -> bool:
        """Whether the device's baseline requires `metric`."""
        baseline = self.baselines.get(device.uuid)
        spec = baseline.metrics.get(metric) if baseline is not None else None
        return spec is not None and spec.required


@dataclasses.dataclass(kw_only=True)
class Outcome:
    measurements: list[Measurement] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    facts: dict[str, str] = dataclasses.field(default_factory=dict)
    """Host facts the test learnt (the NCCL version), for the result file's `host`."""


# -- messages every worker may send, handled here ------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Unsupported(Message):
    """This device cannot run a phase (fp8 on an old GPU): recorded, not an error."""

    phase: str
    reason: str
    metric: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PhaseFailed(Message):
    """A phase raised (a CUDA error in one dtype); the worker goes on with the next."""

    phase: str
    error: str
    traceback: str
    metric: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaultFired(Message):
    kind: str


class NotSupported(Exception):
    """Raised by worker code inside `Context.phase` when the device cannot run the phase."""


# -- limits ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    startup_s: float
    stall_s: float
    limit_s: float

    @classmethod
    def for_work(cls, profile: Profile, busy_s: float) -> Limits:
        """`busy_s` is how long a healthy worker computes; the limit allows twice that, and two stalls."""
        return cls(
            startup_s=profile.startup_timeout_s,
            stall_s=profile.hang_timeout_s,
            limit_s=profile.startup_timeout_s + 2.0 * busy_s + 2.0 * profile.hang_timeout_s,
        )


# -- the parent side ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Assignment(Generic[J]):
    """What one worker process is given: its device, its share of the host, its fault, its job."""

    worker: Callable[[Context, J], None]
    device: Device
    threads: int | None
    fault: Fault | None
    job: J
    peers: tuple[Device, ...] = ()
    """Every device of the run, when the worker sees them all (`sees="node"`); empty when it sees its own."""


class DeviceRun(Generic[J]):
    """Runs `worker(context, job)` on every device of `scope` at once, one process each.

    Use as a context manager. Inside, read messages with `messages(until=...)` and
    answer with `send`; record figures with `measure` and problems with `finding`
    (these work after the block too). On leaving, the workers are joined within
    their limits and how each ended becomes findings; `outcome` has them all.
    """

    def __init__(
        self,
        scope: Scope,
        worker: Callable[[Context, J], None],
        jobs: Sequence[J],
        *,
        busy_s: float,
        sees: Literal["own", "node"] = "own",
    ):
        """`sees`: "own", each worker sees its own GPU only (a GPU in a bad state then fails its own
        worker's start, named); "node", each sees every GPU of the run and works on its own
        (`Context.torch_device`), as copies between GPUs and NCCL's direct paths need."""
        if len(jobs) != len(scope.devices):
            raise ValueError(f"{len(jobs)} jobs for {len(scope.devices)} devices")
        self.scope = scope
        self.limits = Limits.for_work(scope.profile, busy_s)
        self.outcome = Outcome()
        if scope.on_outcome is not None:
            scope.on_outcome(self.outcome)
        self._interrupted = False
        self._fired: set[int] = set()
        cpu_share = max(1, len(scope.devices))
        assignments = [
            _Assignment(
                worker=worker,
                device=device,
                threads=max(1, device.sm_count // cpu_share) if device.kind == "cpu" else None,
                fault=scope.faults.get(device.index),
                job=job,
                peers=scope.devices if sees == "node" else (),
            )
            for device, job in zip(scope.devices, jobs, strict=True)
        ]
        self._group = WorkerGroup(
            _run_assignment,
            assignments,
            startup_s=self.limits.startup_s,
            stall_s=self.limits.stall_s,
            limit_s=self.limits.limit_s,
        )

    def __enter__(self) -> DeviceRun[J]:
        self._group.__enter__()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # Interrupted (Ctrl-C, SIGTERM): the workers are stopped, not judged; they did nothing wrong.
        self._interrupted = isinstance(exc_type, type) and issubclass(exc_type, KeyboardInterrupt)
        try:
            if exc_type is None:
                for _ in self._handled(self._group.messages(until=Done)):
                    pass
        finally:
            self._group.stop(INTERRUPTED if self._interrupted else "")
        for i, device in enumerate(self.scope.devices):
            self._ended(i, device, self._group.end(i))

    def messages(self, until: type[Message], *, together: bool = False) -> Iterator[tuple[Device, Message]]:
        """(device, message) until every worker has sent an `until` or ended; the common
        messages (progress, unsupported and failed phases, faults) are handled here. With
        `together` (the ranks of a collective), until the first worker ends without finishing."""
        yield from self._handled(self._group.messages(until=until, together=together))

    def stop(self, reason: str) -> None:
        """Stop every worker still running: they cannot go on (a rank they need has failed).
        Each becomes an information finding with `reason`; the failed one has its own."""
        self._group.stop(reason)

    def send(self, device: Device, message: Message) -> None:
        self._group.send(self.scope.devices.index(device), message)

    def ask(self, device: Device, message: Message, until: type[Message]) -> Iterator[Message]:
        """Send `message` to one device's worker and yield what it sends back, up to and including
        its `until`; the yield stops early if the worker ends (hung, crashed, raised: its end
        becomes a finding on leaving the block). Every other worker is watched meanwhile and
        must keep reporting progress (`Context.recv(..., waiting=...)`); a message from one of
        them is a bug in the test."""
        i = self.scope.devices.index(device)
        self._group.send(i, message)
        for sender, received in self._handled(self._group.messages(until=until, of=[i])):
            if sender != device:
                raise RuntimeError(f"{sender.label} sent {type(received).__name__} while {device.label} had the turn")
            yield received

    def end(self, device: Device) -> WorkerEnd:
        """How the device's worker ended (after the block), or where it stands (inside it)."""
        return self._group.end(self.scope.devices.index(device))

    def measure(
        self,
        device: Device,
        metric: str,
        windows: Sequence[float],
        unit: str,
        direction: Direction,
        *,
        peer: Device | None = None,
    ) -> None:
        """Record a figure: the median of its timed windows, with their count and range; with `peer`,
        a figure of the pair `device` to `peer`."""
        if not windows:
            raise ValueError(f"{metric} of {device.label}: no windows to take a median of")
        self.outcome.measurements.append(
            Measurement(
                metric=metric,
                gpu=device.uuid,
                value=statistics.median(windows),
                unit=unit,
                direction=direction,
                test=self.scope.test,
                samples=len(windows),
                low=min(windows),
                high=max(windows),
                peer=peer.uuid if peer is not None else "",
            )
        )

    def finding(
        self,
        device: Device,
        code: Code,
        severity: Severity,
        text: str,
        remediation: Remediation = Remediation.NONE,
        *,
        metric: str = "",
        **details: Any,
    ) -> Finding:
        found = device.finding(code, severity, text, remediation, test=self.scope.test, metric=metric, **details)
        self.outcome.findings.append(found)
        return found

    def _handled(self, stream: Iterator[tuple[int, Message]]) -> Iterator[tuple[Device, Message]]:
        group = self.scope.group
        for i, message in stream:
            device = self.scope.devices[i]
            if isinstance(message, Progress):
                if self.scope.on_progress is not None:
                    self.scope.on_progress(device, message)
            elif isinstance(message, FaultFired):
                self._fired.add(i)
            elif isinstance(message, Unsupported):
                text = f"{message.phase} not measured: {message.reason}"
                self.finding(device, Code.TEST_SKIPPED, Severity.INFO, text, metric=message.metric)
            elif isinstance(message, PhaseFailed):
                self.finding(
                    device,
                    Code.TEST_ERROR,
                    Severity.INCOMPLETE,
                    f"{group} {message.phase} raised: {message.error}",
                    Remediation.RERUN,
                    metric=message.metric,
                    phase=message.phase,
                    traceback=message.traceback,
                )
            else:
                yield device, message

    def _ended(self, i: int, device: Device, end: WorkerEnd) -> None:
        group = self.scope.group
        if self._interrupted and end.status in (WorkerStatus.STOPPED, WorkerStatus.CRASHED):
            text = f"{group} worker stopped during {end.phase}: {INTERRUPTED}"
            self.finding(device, Code.INTERRUPTED, Severity.INFO, text, phase=end.phase)
        elif end.status is WorkerStatus.HUNG:
            text = f"{group} worker {end.error}; it was killed"
            # Work that started and then stopped is the device's failure, as DCGM judges it; a worker that
            # never started, or kept going past its limit, stops a decision without judging the device.
            severity = Severity.FAIL if end.overdue is Overdue.STALLED else Severity.INCOMPLETE
            remediation = Remediation.CHECK_CONFIG if end.overdue is Overdue.LIMIT else Remediation.RESET_GPU
            self.finding(device, Code.HANG, severity, text, remediation, phase=end.phase, overdue=str(end.overdue))
        elif end.status is WorkerStatus.STOPPED:
            self.finding(
                device, Code.TEST_ERROR, Severity.INFO, f"{group} worker stopped: {end.error}", phase=end.phase
            )
        elif end.status is not WorkerStatus.DONE:
            text = f"{group} worker {end.status} during {end.phase}: {end.last_line}"
            self.finding(
                device,
                Code.TEST_ERROR,
                Severity.INCOMPLETE,
                text,
                Remediation.RERUN,
                phase=end.phase,
                exitcode=end.exitcode,
                traceback=end.error,
            )
        fault = self.scope.faults.get(device.index)
        if fault is not None and i not in self._fired and end.status is WorkerStatus.DONE:
            text = f"fault {fault} was not applied: the {group} worker has no fault point that takes it"
            self.finding(device, Code.FAULT_NOT_APPLIED, Severity.WARNING, text, Remediation.CHECK_CONFIG)


def nothing_to_test(scope: Scope, why: str, metrics: Sequence[str]) -> Outcome:
    """The outcome of a test between devices on a node with too few of them: `NOTHING_TO_TEST`,
    incomplete for a device whose baseline requires one of `metrics` (it says so, and stands for
    the missing figures), information elsewhere."""
    outcome = Outcome()
    for device in scope.devices:
        required = [m for m in metrics if scope.requires(device, m)]
        text = why + (f"; its baseline requires {', '.join(required)} (docs/interconnect.md)" if required else "")
        severity = Severity.INCOMPLETE if required else Severity.INFO
        remediation = Remediation.CHECK_CONFIG if required else Remediation.NONE
        outcome.findings.append(device.finding(Code.NOTHING_TO_TEST, severity, text, remediation, test=scope.test))
    return outcome


# -- the worker side ------------------------------------------------------------------


class Context:
    """What a test's worker function gets besides its job: runs inside the worker process."""

    def __init__(self, channel: Channel, device: Device, fault: Fault | None = None, peers: tuple[Device, ...] = ()):
        self.device = device
        self.peers = peers
        """Every device of the run, in order, when this worker sees them all; else empty."""
        self._channel = channel
        self._fault = fault.kind if fault else ""
        """Until it fires; then empty: the fault is one event, not a broken device."""
        self._fault_at = fault.at if fault else 1
        self._slow = self._fault in faults.PACE_KINDS
        self._late = self._fault in faults.ARRIVAL_KINDS
        self._points = 0

    @property
    def torch_device(self) -> torch.device:
        """The worker's device: the only GPU it can see (cuda:0), its own among all it sees, or the CPU."""
        return self.torch_device_of(self.device)

    def torch_device_of(self, device: Device) -> torch.device:
        """A device of the run as torch sees it in this worker: its own, or a peer's when it sees them all."""
        import torch

        if device.kind != "cuda":
            return torch.device("cpu")
        if not self.peers:
            if device != self.device:
                raise ValueError(f"this worker sees only {self.device.label}, not {device.label}")
            return torch.device("cuda", 0)
        return torch.device("cuda", self.peers.index(device))

    def progress(self, phase: str, **figures: float) -> None:
        """Say what the worker is doing; call at least every few seconds, or it is declared hung."""
        self._channel.progress(phase, **figures)

    def send(self, message: Message) -> None:
        self._channel.send(message)

    def recv(self, kind: type[M], *, waiting: str = "") -> M:
        """The parent's next command; with `waiting`, say so every few seconds meanwhile (a worker
        waiting its turn in `DeviceRun.ask` must, or it is declared hung)."""
        return self._channel.recv(kind, waiting=waiting)

    @contextlib.contextmanager
    def phase(self, name: str, *, metric: str = "") -> Iterator[None]:
        """A part of the work that may fail alone: an exception inside ends the phase
        (reported as PhaseFailed, or Unsupported for NotSupported) and the worker goes on."""
        self.progress(f"{name} start")
        try:
            yield
        except NotSupported as err:
            self.send(Unsupported(phase=name, reason=str(err), metric=metric))
        except Exception as err:  # noqa: BLE001 - a CUDA error in one phase: report it, measure the others
            self.send(
                PhaseFailed(
                    phase=name, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(), metric=metric
                )
            )

    def fault_input(self, data: torch.Tensor) -> None:
        """Mark an input the work is computed from: a `skew` fault perturbs it here."""
        if self._fault in faults.INPUT_KINDS:
            faults.perturb(data)
            self._fired(self._fault)

    def fault_point(self, data: torch.Tensor | None = None) -> None:
        """Mark where a unit of work's result lies, once per unit: the first call that can take
        the device's injected fault (a flipped bit in `data`, a hang, a crash, an error) fires
        it, or the Nth for a fault `KIND@N`."""
        kind = self._fault
        passive = faults.INPUT_KINDS + faults.PACE_KINDS + faults.ARRIVAL_KINDS
        if not kind or kind in passive or (kind in faults.DATA_KINDS and data is None):
            return
        self._points += 1
        if self._points < self._fault_at:
            return
        self._fired(kind)  # first: a hang, a crash or an error never comes back
        faults.fire(kind, data, self.torch_device)

    def fault_pace(self) -> None:
        """Mark the start of a timed unit of work: a `slow` fault delays every one."""
        if not self._slow:
            return
        if self._fault:  # said once; slow for ever
            self._fired(self._fault)
        time.sleep(faults.SLOW_S)

    def fault_late(self) -> None:
        """Mark where a rank arrives for a timed window of a collective: a `late` fault delays it at every one."""
        if not self._late:
            return
        if self._fault:  # said once; late every time
            self._fired(self._fault)
        time.sleep(faults.LATE_S)

    def _fired(self, kind: str) -> None:
        self._fault = ""
        self.send(FaultFired(kind=kind))


def _run_assignment(assignment: _Assignment[Any], channel: Channel) -> None:
    """The entry point of every device worker. A GPU worker sees its own GPU only, so a GPU
    in a bad state fails its own worker's CUDA start-up, named, and no other's."""
    device = assignment.device
    if device.kind == "cuda":  # before CUDA starts in this process (the fork server never started it)
        os.environ["CUDA_DEVICE_ORDER"] = PCI_ORDER
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(d.visible_as for d in assignment.peers or (device,))
    import torch

    if assignment.threads:
        torch.set_num_threads(assignment.threads)
    context = Context(channel, device, assignment.fault, assignment.peers)
    if device.kind == "cuda":
        torch.cuda.set_device(context.torch_device)
        seen = f"GPU-{torch.cuda.get_device_properties(context.torch_device).uuid}"
        if device.uuid.startswith("GPU-") and seen != device.uuid:
            raise RuntimeError(f"this worker was given {device.uuid} but CUDA shows it {seen}")
    context.progress("ready")
    assignment.worker(context, assignment.job)
