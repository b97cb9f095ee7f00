"""Snapshots and Xid events in, findings out: the active suite's rules, applied to a node at work.

The rules are harness/health.py's and the Xid table's, with the thresholds from the GPU
model's baseline; the watch only chooses what to compare, as the suite does:

- state: every snapshot (ECC since the driver loaded, remaps, retirements, links, GPUs
  missing). The hardware slowing a GPU down is judged here only while the GPU is idle:
  under load it is the telemetry rule's, by share of time;
- delta: the snapshot now against the oldest within `--delta-window` (corrected ECC and
  NVLink errors gained, links gone down, against the per-test limits);
- telemetry: the polls within `--window` during which a GPU was busy (not idle), once
  there are `--load-samples` of them: share of time slowed down, temperatures, the PCIe
  generation under load;
- Xid: the events NVML delivered since the last poll, judged by the Xid table, in the context of
  the last day's (an application's Xid 13 or 31 repeated in separate bursts on one GPU is the GPU's).

The GPUs judged are those of the first snapshot, with those a journal remembers from
earlier in this boot: a GPU lost before a restart is still missed after it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness import health
from harness.baselines import BaselineSet, HealthLimits
from harness.devices import Device
from harness.nvml import kernel_log, xid_findings, xid_rules, xid_table
from harness.nvml.monitor import NvmlXid, summarize
from harness.nvml.snapshot import GpuHealth, Snapshot
from harness.records import NODE, Code, Finding, Remediation, Severity

TEST = "watch"
IDLE = 0x1
"""nvmlClocksEventReasonGpuIdle."""
NVML_EVENT = "an NVML Xid event"
DELTA_KEPT = 20
"""Snapshots kept for the delta window: one per 1/20 of it (a bounded memory, whatever the interval)."""
XIDS_KEPT = 10_000
"""Xid events kept for a day's context: a bound on memory, whatever a GPU in trouble logs."""


def busy(gpu: GpuHealth) -> bool:
    """Under load: the driver does not report the GPU idle (the clock reasons are a bitmask)."""
    return gpu.clock_events is not None and not gpu.clock_events & IDLE


def device_of(gpu: GpuHealth) -> Device:
    return Device(index=gpu.index, kind="cuda", name=gpu.name, uuid=gpu.uuid, pci_bus_id=gpu.pci_bus_id)


class Judge:
    def __init__(
        self,
        baselines: BaselineSet,
        table: xid_table.XidTable,
        *,
        window_s: float,
        load_samples: int,
        delta_window_s: float,
    ):
        self.baselines = baselines
        self.table = table
        self.window_s = window_s
        self.load_samples = load_samples
        self.delta_window_s = delta_window_s
        self.devices: tuple[Device, ...] = ()
        self.limits: dict[str, HealthLimits] = {}
        self.expected: int | None = None
        self.expected_from = ""
        """How many GPUs the node should have, and what says so (the node's GPU feature discovery label, or
        the baseline's `[match] gpus`); None: nothing says, and a short node is not judged short."""
        self._history: collections.deque[tuple[float, Snapshot]] = collections.deque()
        self._samples: dict[str, collections.deque[tuple[float, dict[str, Any]]]] = {}
        self._xids: collections.deque[kernel_log.XidEvent] = collections.deque(maxlen=XIDS_KEPT)
        """The last day's Xid events: the context a new one is judged in (a cause, a repeat), never judged again."""

    def start(self, first: Snapshot, remembered: Iterable[Mapping[str, Any]] = ()) -> None:
        """The GPUs to judge: the first snapshot's, those NVML already reports lost, and those the
        journal remembers. Raises ConfigError for a GPU two baselines claim."""
        found = {gpu.uuid: device_of(gpu) for gpu in first.gpus}
        for given in remembered:
            uuid = str(given.get("uuid", ""))
            if uuid and uuid not in found:
                found[uuid] = Device(
                    index=int(given.get("index", -1)),
                    kind="cuda",
                    name=str(given.get("name", "")),
                    uuid=uuid,
                    pci_bus_id=str(given.get("pci_bus_id", "")),
                )
        indices = {d.index for d in found.values()}
        for index in first.lost:
            if index not in indices:  # lost before the watch ever saw it: named by its index
                found[f"GPU-lost-index-{index}"] = Device(
                    index=index, kind="cuda", name="", uuid=f"GPU-lost-index-{index}"
                )
        self.devices = tuple(sorted(found.values(), key=lambda d: d.index))
        self.expected, self.expected_from = self._expected_by_baseline()
        self.limits = {}
        on_node = collections.Counter(d.name for d in self.devices)
        for device in self.devices:
            baseline = self.baselines.for_health("cuda", device.name, on_node[device.name]) if device.name else None
            if baseline is not None:
                self.limits[device.uuid] = baseline.health

    def judge(self, snapshot: Snapshot, xids: Sequence[NvmlXid], t: float) -> list[Finding]:
        """The findings this poll: warnings and failures (info findings are history, not news)."""
        state = health.state(snapshot, self.devices, self.limits, test=TEST)
        found = [f for f in state if not self._busy_slowdown(f, snapshot)]
        oldest = self._remember(snapshot, t)
        if oldest is not None:
            during = f"the last {_minutes(t - oldest[0])}"
            found += health.delta(oldest[1], snapshot, self.devices, self.limits, test=TEST, during=during)
        summary = self._telemetry(snapshot, t)
        if summary:
            during = f"the last {_minutes(self.window_s)} under load"
            found += health.telemetry(summary, self.devices, self.limits, test=TEST, during=during)
        found += self._short()
        events = self._events(xids)
        found += xid_findings.findings(events, self._by_pci(), self.table, test=TEST, earlier=tuple(self._xids))
        self._remember_xids(events)
        return [f for f in found if f.severity in (Severity.FAIL, Severity.WARNING)]

    def telemetry_summary(self, t: float) -> dict[str, dict[str, Any]]:
        """Per GPU: the window's telemetry (for the metrics), whatever the number of samples."""
        recent = [sample for samples in self._samples.values() for s, sample in samples if t - s <= self.window_s]
        return summarize(recent)

    def expect(self, count: int | None, source: str) -> None:
        """The node says how many GPUs it should have (GPU feature discovery's nvidia.com/gpu.count): that
        wins over the baselines."""
        if count is not None:
            self.expected, self.expected_from = count, source

    # -- helpers ---------------------------------------------------------------------------------

    def _expected_by_baseline(self) -> tuple[int | None, str]:
        """The baselines' `[match] gpus` for this model, when they declare one node size only (a model sold
        only as 8-GPU boards): a node with fewer lost some. A model with files for several sizes (a 1-GPU VM
        and an 8-GPU board) cannot say which this node is: the node's label must (None otherwise)."""
        names = {d.name for d in self.devices if d.name}
        if len(names) != 1:
            return None, ""
        (name,) = names
        counts = self.baselines.counts_for("cuda", name)
        if len(counts) != 1:
            return None, ""
        return counts[0], f"the baselines' [match] gpus for {name}"

    def _short(self) -> list[Finding]:
        """Fewer GPUs than the node should have, counting every GPU seen since the start: a GPU dead before
        the watch started was never listed, so only the count can miss it."""
        if self.expected is None or len(self.devices) >= self.expected:
            return []
        seen = len(self.devices)
        message = f"{seen} of {self.expected} GPUs seen by NVML ({self.expected_from}): one dead or fallen off the bus?"
        return [
            Finding(
                code=Code.GPU_MISSING,
                severity=Severity.FAIL,
                gpu=NODE,
                message=message,
                remediation=Remediation.REBOOT_NODE,
                test=TEST,
            )
        ]

    def _busy_slowdown(self, finding: Finding, snapshot: Snapshot) -> bool:
        gpu = snapshot.gpu(finding.gpu)
        return finding.code is Code.THROTTLED and gpu is not None and busy(gpu)

    def _remember(self, snapshot: Snapshot, t: float) -> tuple[float, Snapshot] | None:
        """The oldest snapshot inside the delta window (None before there is one); keeps this one."""
        while self._history and t - self._history[0][0] > self.delta_window_s:
            self._history.popleft()
        oldest = self._history[0] if self._history else None
        if snapshot.gpus and (not self._history or t - self._history[-1][0] >= self.delta_window_s / DELTA_KEPT):
            self._history.append((t, snapshot))
        return oldest

    def _telemetry(self, snapshot: Snapshot, t: float) -> dict[str, dict[str, Any]]:
        for gpu in snapshot.gpus:
            samples = self._samples.setdefault(gpu.uuid, collections.deque())
            if busy(gpu):
                samples.append((t, {gpu.uuid: _sample(gpu)}))
        for samples in self._samples.values():
            while samples and t - samples[0][0] > self.window_s:
                samples.popleft()
        ready = [s for samples in self._samples.values() if len(samples) >= self.load_samples for _, s in samples]
        return summarize(ready) if ready else {}

    def _remember_xids(self, events: Sequence[kernel_log.XidEvent]) -> None:
        self._xids.extend(events)
        newest = max((e.when for e in self._xids if e.when is not None), default=None)
        while self._xids and newest is not None and (self._xids[0].when or newest) < newest - xid_rules.REPEAT_WINDOW:
            self._xids.popleft()

    def _events(self, xids: Sequence[NvmlXid]) -> list[kernel_log.XidEvent]:
        return [
            kernel_log.XidEvent(
                pci_bus_id=x.pci_bus_id, xid=x.xid, when=x.when, pid=None, process="", message=NVML_EVENT, line=""
            )
            for x in xids
        ]

    def _by_pci(self) -> dict[str, str]:
        return {d.pci_bus_id.upper(): d.uuid for d in self.devices if d.pci_bus_id}


def _sample(gpu: GpuHealth) -> dict[str, Any]:
    """A poll's snapshot as a telemetry sample (harness/nvml/monitor.py's fields)."""
    return {
        "sm_clock_mhz": gpu.sm_clock_mhz,
        "memory_clock_mhz": gpu.memory_clock_mhz,
        "power_w": gpu.power_w,
        "temperature_c": gpu.temperature_c,
        "memory_temperature_c": gpu.memory_temperature_c,
        "clock_events": gpu.clock_events,
        "pcie_gen": gpu.pcie.gen,
        "pcie_width": gpu.pcie.width,
    }


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
