"""The monitor: one worker process per run that holds NVML open, so that a wedged driver
(NVML calls that never return, as after an Xid 79) costs a time limit, not the run.

It answers the parent's requests: a health snapshot (`snapshot`), a telemetry window
around a stress test (`begin` ... `end`: 1 Hz samples of clocks, power, temperatures,
throttle reasons and the PCIe link, summarised), and, at the end, every Xid event NVML
reported while it ran. Where NVML cannot load, snapshots come from `nvidia-smi -q -x`
instead, and there is no telemetry or Xid listening.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
import time
from collections.abc import Sequence
from typing import Any

from harness.nvml import binding, read, smi
from harness.nvml.backend import Backend
from harness.nvml.snapshot import CLOCK_EVENTS, Snapshot
from harness.workers import Channel, Message, WorkerGroup

SAMPLE_EVERY_S = 1.0
WEEK_S = 7 * 24 * 3600.0
FIELDS = ("sm_clock_mhz", "memory_clock_mhz", "power_w", "temperature_c", "memory_temperature_c")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    spec: str
    """`real` or `sim:FILE` (harness/nvml/binding.py)."""
    interval_s: float = SAMPLE_EVERY_S


# -- messages ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ready(Message):
    source: str
    """"nvml", "nvidia-smi" or "sim:FILE"; "" when neither is available."""
    problem: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Snap(Message):
    moment: str
    finished: tuple[str, ...] = ()
    """The test groups that have run: a simulation applies its changes from then on."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Taken(Message):
    snapshot: Snapshot


@dataclasses.dataclass(frozen=True, kw_only=True)
class Begin(Message):
    label: str
    group: str = ""
    """The test group starting: a simulation applies its `during` changes while it runs."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class End(Message):
    label: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Telemetry(Message):
    label: str
    summary: dict[str, dict[str, Any]]
    """Per GPU UUID: samples, min/median/max of each field, share of samples under each clock event
    reason, and the lowest PCIe generation and width seen."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stop(Message):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvmlXid:
    uuid: str
    pci_bus_id: str
    xid: int
    when: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stopped(Message):
    xids: tuple[NvmlXid, ...]


# -- the parent side -----------------------------------------------------------------------------


class Monitor:
    """Use as a context manager; every request answers within `answer_s` or the monitor is gone
    (then `problem` says why and the requests answer None)."""

    def __init__(self, spec: str, *, startup_s: float, answer_s: float = 60.0, sample_every_s: float = SAMPLE_EVERY_S):
        self.spec = spec
        self.answer_s = answer_s
        self.source = ""
        self.problem = ""
        job = Job(spec=spec, interval_s=sample_every_s)
        self._group = WorkerGroup(monitor_worker, [job], startup_s=startup_s, stall_s=answer_s, limit_s=WEEK_S)
        self._alive = False

    def __enter__(self) -> Monitor:
        self._group.__enter__()
        ready = self._await(Ready)
        if isinstance(ready, Ready):
            self._alive = True
            self.source, self.problem = ready.source, ready.problem
        return self

    def __exit__(self, *exc: object) -> None:
        self._group.stop()

    @property
    def alive(self) -> bool:
        """It answers requests: False before it started, and once it is gone (`problem` says why)."""
        return self._alive

    def snapshot(self, moment: str, finished: Sequence[str] = ()) -> Snapshot | None:
        taken = self._ask(Snap(moment=moment, finished=tuple(finished)), Taken)
        return taken.snapshot if isinstance(taken, Taken) else None

    def begin(self, label: str, group: str = "") -> None:
        if self._alive:
            self._group.send(0, Begin(label=label, group=group))

    def end(self, label: str) -> Telemetry | None:
        found = self._ask(End(label=label), Telemetry)
        return found if isinstance(found, Telemetry) else None

    def stop(self) -> tuple[NvmlXid, ...] | None:
        """Every Xid event NVML delivered while it ran; None when it is gone and they with it."""
        found = self._ask(Stop(), Stopped)
        self._alive = False
        return found.xids if isinstance(found, Stopped) else None

    def _ask(self, request: Message, answer: type[Message]) -> Message | None:
        if not self._alive:
            return None
        self._group.send(0, request)
        return self._await(answer)

    def _await(self, answer: type[Message]) -> Message | None:
        for _, message in self._group.messages(until=answer):
            if isinstance(message, answer):
                return message
        end = self._group.end(0)
        self._alive = False
        self.problem = f"the NVML monitor {end.status}: {end.last_line}"
        return None


# -- the worker side -----------------------------------------------------------------------------


def monitor_worker(job: Job, channel: Channel) -> None:
    nv, source, problem = _open(job.spec)
    channel.send(Ready(source=source, problem=problem))
    known: dict[Any, tuple[str, str]] = {}
    """Each GPU's UUID and PCI bus id by handle, read while it answers: an Xid 79 names a GPU that no longer does."""
    events = _listen(nv, known) if nv is not None else None
    xids: list[NvmlXid] = []
    windows: dict[str, list[dict[str, Any]]] = {}
    next_sample = time.monotonic()
    while True:
        if channel.poll(max(0.0, next_sample - time.monotonic())):
            request = channel.recv(Message)
            if isinstance(request, Snap):
                if nv is not None:
                    nv.follow_tests(finished=request.finished)
                channel.send(Taken(snapshot=_snapshot(nv, source)))
            elif isinstance(request, Begin):
                windows[request.label] = []
                if nv is not None:
                    nv.follow_tests(running={request.group})
            elif isinstance(request, End):
                if nv is not None:
                    nv.follow_tests(running=())
                channel.send(Telemetry(label=request.label, summary=summarize(windows.pop(request.label, []))))
            elif isinstance(request, Stop):
                xids += _drain(nv, events, known)
                channel.send(Stopped(xids=tuple(xids)))
                return
            continue
        next_sample = time.monotonic() + job.interval_s
        if nv is not None:
            xids += _drain(nv, events, known)
            if windows:
                sample = _sample(nv)
                for samples in windows.values():
                    samples.append(sample)


def summarize(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per GPU: how many samples, min/median/max of each field, and the share of samples under
    each clock event reason (several at once is normal)."""
    per_gpu: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        for uuid, values in sample.items():
            per_gpu.setdefault(uuid, []).append(values)
    summary = {}
    for uuid, values in per_gpu.items():
        entry: dict[str, Any] = {"samples": len(values)}
        for field in FIELDS:
            numbers = [v[field] for v in values if v.get(field) is not None]
            if numbers:
                entry[field] = {"min": min(numbers), "median": statistics.median(numbers), "max": max(numbers)}
        masks = [v["clock_events"] for v in values if v.get("clock_events") is not None]
        if masks:
            entry["clock_events"] = {
                name: round(sum(1 for m in masks if m & bit) / len(masks), 4) for bit, name in CLOCK_EVENTS.items()
            }
        for field in ("pcie_gen", "pcie_width"):
            seen = [v[field] for v in values if v.get(field) is not None]
            if seen:
                entry[f"{field}_min"] = min(seen)
                entry[f"{field}_median"] = statistics.median(seen)
        summary[uuid] = entry
    return summary


def describe(entry: dict[str, Any]) -> str:
    """What a GPU was doing during a burn, in a few words: for a LOW_THROUGHPUT finding."""
    parts = []
    shares = entry.get("clock_events", {})
    for name, share in sorted(shares.items(), key=lambda item: -item[1]):
        if share >= 0.05 and name != "gpu_idle":
            parts.append(f"{name.replace('_', ' ')} {share:.0%} of the burn")
    for field, unit in (("temperature_c", "C"), ("power_w", "W")):
        if field in entry:
            parts.append(f"{entry[field]['max']:.0f} {unit} max")
    if "sm_clock_mhz" in entry:
        parts.append(f"SM clock median {entry['sm_clock_mhz']['median']:.0f} MHz")
    return ", ".join(parts) if parts else "no telemetry"


def _open(spec: str) -> tuple[Backend[Any] | None, str, str]:
    """The binding and the source it gives snapshots from, or None with nvidia-smi as the fallback."""
    try:
        nv = binding.load(spec)
        nv.nvmlInit()
        return nv, "nvml" if spec == binding.REAL else spec, ""
    except binding.Unavailable as err:
        problem = str(err)
    except Exception as err:  # noqa: BLE001 - NVMLError (LibraryNotFound, DriverNotLoaded, ...): fall back
        problem = f"NVML could not start: {type(err).__name__}: {err}"
    return None, "nvidia-smi", problem


def _snapshot(nv: Any, source: str) -> Snapshot:
    if nv is None:
        return smi.read()
    try:
        return read.snapshot(nv, source)
    except nv.NVMLError as err:
        return Snapshot(source=source, taken_at=dt.datetime.now(dt.UTC), problem=f"NVML query failed: {err}")


def _listen(nv: Any, known: dict[Any, tuple[str, str]]) -> Any:
    """An event set for Xid events on every GPU, or None where the driver does not offer one; `known`
    is filled with each GPU's UUID and PCI bus id by handle."""
    try:
        events = nv.nvmlEventSetCreate()
        for index in range(nv.nvmlDeviceGetCount()):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                known[read.handle_key(handle)] = (read.text(nv.nvmlDeviceGetUUID(handle)), _pci(nv, handle))
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, events)
            except nv.NVMLError:
                continue  # lost already, or no event support (some vGPU, MIG setups): the kernel log still has it
        return events
    except nv.NVMLError:
        return None


def _drain(nv: Any, events: Any, known: dict[Any, tuple[str, str]]) -> list[NvmlXid]:
    if nv is None or events is None:
        return []
    found: list[NvmlXid] = []
    while True:
        try:
            data = nv.nvmlEventSetWait_v2(events, 0)
        except nv.NVMLError:
            return found  # a timeout: nothing more waiting
        found.append(_xid(nv, data, known))


def _xid(nv: Any, data: Any, known: dict[Any, tuple[str, str]]) -> NvmlXid:
    """The event's GPU as it was known when it answered: an Xid 79's GPU answers GPU_IS_LOST now."""
    handle = data.device
    uuid, pci = known.get(read.handle_key(handle), ("", ""))
    if not uuid:
        try:
            uuid, pci = read.text(nv.nvmlDeviceGetUUID(handle)), _pci(nv, handle)
        except nv.NVMLError:
            pass  # lost, and never seen: the event still counts, by its number
    return NvmlXid(uuid=uuid, pci_bus_id=pci, xid=int(data.eventData), when=dt.datetime.now(dt.UTC))


def _pci(nv: Any, handle: Any) -> str:
    return read.text(read.ask(nv, lambda: nv.nvmlDeviceGetPciInfo(handle).busId) or "")


def _sample(nv: Any) -> dict[str, Any]:
    """One telemetry sample of every GPU that answers. A GPU that fell off the bus (GPU_IS_LOST) or fails
    a query is left out of this sample, and the others are still sampled: the snapshots judge it lost."""
    sample: dict[str, Any] = {}
    try:
        count = nv.nvmlDeviceGetCount()
    except nv.NVMLError:
        return sample
    for index in range(count):
        try:
            h = nv.nvmlDeviceGetHandleByIndex(index)
            sample[read.text(nv.nvmlDeviceGetUUID(h))] = _sample_gpu(nv, h)
        except nv.NVMLError:
            continue
    return sample


def _sample_gpu(nv: Any, h: Any) -> dict[str, Any]:
    power = read.ask(nv, lambda: nv.nvmlDeviceGetPowerUsage(h))
    return {
        "sm_clock_mhz": read.ask(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        "memory_clock_mhz": read.ask(nv, lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        "power_w": power / 1000.0 if power is not None else None,
        "temperature_c": read.ask(nv, lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        "memory_temperature_c": read.memory_temperature(nv, h),
        "clock_events": read.clock_events(nv, h),
        "pcie_gen": read.ask(nv, lambda: nv.nvmlDeviceGetCurrPcieLinkGeneration(h)),
        "pcie_width": read.ask(nv, lambda: nv.nvmlDeviceGetCurrPcieLinkWidth(h)),
    }


def reasons(entry: dict[str, Any]) -> tuple[str, ...]:
    """The clock event reasons seen at all in a telemetry entry."""
    return tuple(name for name, share in entry.get("clock_events", {}).items() if share > 0)
