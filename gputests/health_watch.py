"""Health around a run: the monitor's snapshots and telemetry, turned into findings.

A snapshot when the run starts and ends, and before and after every stress test;
telemetry during every stress test; Xid events for the whole run, from NVML and
from the kernel log (this run's window only). The session (gputests/session.py)
calls it; the rules are harness/health.py's.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import health
from harness.baselines import BaselineSet, HealthLimits
from harness.devices import Device
from harness.nvml import kernel_log, xid_findings
from harness.nvml.monitor import SAMPLE_EVERY_S, Monitor, describe
from harness.nvml.snapshot import GpuHealth, Snapshot
from harness.nvml.xid_table import load_table
from harness.records import Code, Finding, Remediation, Severity

NVML_EVENT = "an NVML Xid event"


class Watch:
    """Use as a context manager around the run."""

    def __init__(
        self,
        spec: str,
        devices: Sequence[Device],
        baselines: BaselineSet,
        *,
        startup_s: float,
        xid_table: Path | None = None,
        sample_every_s: float = SAMPLE_EVERY_S,
    ):
        self.spec = spec
        self.devices = tuple(devices)
        self.baselines = baselines
        self.limits: dict[str, HealthLimits] = self._limits()
        self.monitor = Monitor(spec, startup_s=startup_s, sample_every_s=sample_every_s)
        self.xid_table = load_table(xid_table)
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.latest: Snapshot | None = None
        self.telemetry: dict[str, dict[str, Any]] = {}
        self.finished: list[str] = []
        self.began = dt.datetime.now(dt.UTC)
        self._before: dict[str, Snapshot | None] = {}
        self._read = False
        """A snapshot was taken at the start: health is known, so losing it later stops a pass."""

    @property
    def simulated(self) -> bool:
        return self.spec.startswith("sim:")

    def __enter__(self) -> Watch:
        self.monitor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.monitor.__exit__(*exc)

    def start(self) -> list[Finding]:
        """The first snapshot; findings about the health data itself (a simulation, none at all)."""
        found = []
        if self.simulated:
            found.append(
                Finding(
                    code=Code.SIMULATED,
                    severity=Severity.WARNING,
                    message=f"health data from a simulated NVML ({self.spec}): this run says nothing about this node, "
                    "and preflight and periodic refuse it",
                    remediation=Remediation.CHECK_CONFIG,
                )
            )
        snapshot = self._take("start")
        self._read = snapshot is not None and bool(snapshot.gpus)
        if snapshot is not None and self.simulated:
            # The simulated GPUs are the ones judged, whatever ran the stress tests (the CPU, in CI).
            self.devices = tuple(_device(gpu) for gpu in snapshot.gpus)
            self.limits = self._limits()
        if snapshot is not None:
            found += health.mig(snapshot, self.devices)
        found += self._mig_visible(found)
        if snapshot is None or (not snapshot.gpus and snapshot.problem):
            why = (snapshot.problem if snapshot else "") or self.monitor.problem or "no NVML and no nvidia-smi"
            found.append(
                Finding(
                    code=Code.HEALTH_UNAVAILABLE,
                    severity=Severity.WARNING,
                    message=f"no health snapshot: {why}",
                    remediation=Remediation.CHECK_CONFIG,
                )
            )
        return found

    def judge(self, test: str) -> list[Finding] | None:
        """The health test: the state rules on a fresh snapshot; None when there is none to judge."""
        snapshot = self._take("health")
        if snapshot is None or not snapshot.gpus:
            return None
        found = health.state(snapshot, self.devices, self.limits, test=test)
        return [f for f in found if f.code is not Code.MIG_ENABLED]  # said once, for the run, at the start

    @property
    def unavailable(self) -> str:
        return self.monitor.problem or "no NVML and no nvidia-smi on this node"

    def before(self, test: str, group: str) -> None:
        self._before[test] = self._take(f"before:{group}")
        self.monitor.begin(test, group)

    def after(self, test: str, group: str) -> list[Finding]:
        """Telemetry and the delta rules for a stress test that just ended."""
        found: list[Finding] = []
        telemetry = self.monitor.end(test)
        if telemetry is not None and telemetry.summary:
            self.telemetry[test] = telemetry.summary
            found += health.telemetry(telemetry.summary, self.devices, self.limits, test=test, during=group)
        self.finished.append(group)
        after = self._take(f"after:{group}")
        before = self._before.pop(test, None)
        if _readable(before) and _readable(after):
            assert before is not None and after is not None
            found += health.delta(before, after, self.devices, self.limits, test=test, during=group)
        elif self._read:
            why = next((s.problem for s in (after, before) if s is not None and s.problem), "")
            found.append(self._lost(f"what {group} did to the GPUs was not judged{f' ({why})' if why else ''}", test))
        return found

    def explain(self, finding: Finding) -> Finding:
        """A LOW_THROUGHPUT finding, told what its GPU was doing during the burn, and for a PCIe
        figure the GPU's PCIe link as the last snapshot saw it."""
        if finding.code is not Code.LOW_THROUGHPUT:
            return finding
        message = finding.message
        gpu = self.latest.gpu(finding.gpu) if self.latest is not None else None
        if finding.metric.startswith("pcie.") and gpu is not None and gpu.pcie.gen is not None:
            link = gpu.pcie
            message += (
                f"; PCIe link gen {link.gen} x{link.width} (the card's best: gen {link.gen_max} x{link.width_max};"
                " an idle link may read a lower generation)"
            )
        entry = self.telemetry.get(finding.test, {}).get(finding.gpu)
        if entry:
            message += f"; during the burn: {describe(entry)}"
        return dataclasses.replace(finding, message=message)

    def finish(self) -> list[Finding]:
        """The last snapshot, and every Xid of this run: from NVML, and from the kernel log in its window."""
        self._take("end")
        ended = dt.datetime.now(dt.UTC)
        found: list[Finding] = []
        delivered = self.monitor.stop()
        if delivered is None and self._read:
            found.append(self._lost("NVML's Xid events of this run were lost with it", ""))
        events = [
            kernel_log.XidEvent(
                pci_bus_id=x.pci_bus_id, xid=x.xid, when=x.when, pid=None, process="", message=NVML_EVENT, line=""
            )
            for x in delivered or ()
        ]
        if not self.simulated:  # a simulation's Xids come from its scenario, not this host's kernel
            text, problem = kernel_log.read_kernel_log(self.began)
            if problem:
                sys.stderr.write(f"gpu-burnin: the kernel log was not read ({problem}); Xids only from NVML\n")
            logged = kernel_log.parse_kernel_log(text, boot_time=_boot_time())
            inside, undated = kernel_log.in_window(logged, self.began, ended)
            events += inside
            if undated:
                sys.stderr.write(f"gpu-burnin: {undated} Xid lines in the kernel log carry no time; not judged\n")
        by_pci = {d.pci_bus_id.upper(): d.uuid for d in self.devices if d.pci_bus_id}
        # A stress test ran on these GPUs: gpu-burnin's own workload, a known good application.
        found += xid_findings.findings(_unique(events), by_pci, self.xid_table, own_burn=bool(self.finished))
        return found

    def _mig_visible(self, found: list[Finding]) -> list[Finding]:
        """MIG slices named in CUDA_VISIBLE_DEVICES or by torch, where no snapshot said MIG (no NVML)."""
        named = [name for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if name.strip()[:4] == "MIG-"]
        named += [f"{d.label}: {d.name}" for d in self.devices if d.kind == "cuda" and " MIG " in f" {d.name} "]
        cuda = any(device.kind == "cuda" for device in self.devices)
        if not named or not cuda or any(f.code is Code.MIG_ENABLED for f in found):
            return []
        return [
            Finding(
                code=Code.MIG_ENABLED,
                severity=Severity.INCOMPLETE,
                message=f"MIG slices under test ({', '.join(named)}): burn-in needs whole GPUs",
                remediation=Remediation.CHECK_CONFIG,
            )
        ]

    def _lost(self, what: str, test: str) -> Finding:
        """Health known at the start, then not (the monitor gone: a wedged driver, a crash; or NVML failing to
        read the GPUs): unknown health stops a pass, never fails it."""
        cause = "NVML could not read the GPUs" if self.monitor.alive else self.monitor.problem
        return Finding(
            code=Code.HEALTH_UNAVAILABLE,
            severity=Severity.INCOMPLETE,
            test=test,
            message=f"{cause or 'the NVML monitor is gone'}: {what}",
            remediation=Remediation.RERUN,
        )

    def _limits(self) -> dict[str, HealthLimits]:
        found = {}
        on_node = collections.Counter(d.name for d in self.devices)
        for device in self.devices:
            cuda = device.kind == "cuda"
            baseline = self.baselines.for_health(device.kind, device.name, on_node[device.name]) if cuda else None
            if baseline is not None:
                found[device.uuid] = baseline.health
        return found

    def _take(self, moment: str) -> Snapshot | None:
        snapshot = self.monitor.snapshot(moment, self.finished)
        if snapshot is not None:
            self.snapshots[moment] = snapshot.to_dict()
            self.latest = snapshot
        return snapshot


def _readable(snapshot: Snapshot | None) -> bool:
    """The GPUs were read: a snapshot that failed whole (an NVML query error) says nothing about them."""
    return snapshot is not None and bool(snapshot.gpus or snapshot.lost or not snapshot.problem)


def _device(gpu: GpuHealth) -> Device:
    return Device(
        index=gpu.index, kind="cuda", name=gpu.name, uuid=gpu.uuid, serial=gpu.serial, pci_bus_id=gpu.pci_bus_id
    )


def _unique(events: list[kernel_log.XidEvent]) -> list[kernel_log.XidEvent]:
    """An Xid seen by NVML and in the kernel log is one event: keep the kernel log's (it has the pid)."""
    logged = {(e.pci_bus_id, e.xid) for e in events if e.message != NVML_EVENT}
    return [e for e in events if e.message != NVML_EVENT or (e.pci_bus_id, e.xid) not in logged]


def _boot_time() -> dt.datetime | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return dt.datetime.fromtimestamp(int(line.split()[1]), dt.UTC)
    except (OSError, ValueError):
        pass
    return None
