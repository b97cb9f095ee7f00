"""The PCIe test, parent side: one GPU at a time, each direction's figure, every bad copy a finding.

Every worker allocates at once (gputests/work/pcie.py is the worker side); then each
device in turn measures host to device, device to host and both at once while the
others wait, so the figure is the link's own and not its share of a switch. Per
device it records `pcie.h2d.gbps`, `pcie.d2h.gbps` and `pcie.bidir.gbps` (the median
window), and a DATA_MISMATCH for copies whose destination did not match the source.
The baseline judges each figure against its floor and against the node's best GPU;
the health snapshot's link generation and width are added to a low figure's message
(gputests/health_watch.py).
"""

from __future__ import annotations

from gputests.work import pcie
from harness.devices import Device
from harness.groups import PcieSection
from harness.records import Code, Direction, Remediation, Severity
from harness.workers.devicetest import DeviceRun, Outcome, Scope

ALLOWANCE_S = 20.0
"""Per device, for what is not timed: the calibration and the first windows (an estimate: a
256 MiB copy takes 5 ms at PCIe 5.0 speed, a window 0.1 s)."""


def run(scope: Scope) -> Outcome:
    devices = scope.devices
    profile = scope.profile
    per_direction = profile.duration_s / (len(pcie.DIRECTIONS) * max(1, len(devices)))
    nbytes = profile.section(PcieSection).mib << 20
    job = pcie.Job(nbytes=nbytes, seconds=per_direction, warmup_s=min(profile.warmup_s, 1.0))
    busy = profile.duration_s + len(devices) * (ALLOWANCE_S + len(pcie.DIRECTIONS) * job.warmup_s)
    placed: dict[str, str] = {}
    with DeviceRun(scope, pcie.worker, [job] * len(devices), busy_s=busy) as device_run:
        for device, message in device_run.messages(until=pcie.Ready):
            if isinstance(message, pcie.Ready):
                placed[device.uuid] = message.placement
                if device.kind == "cuda":
                    text = f"host memory and thread: {message.placement}"
                    device_run.finding(device, Code.PCIE_PLACEMENT, Severity.INFO, text, placement=message.placement)
        for device in devices:
            if device.uuid not in placed:
                continue  # it ended before it was ready: that end is its finding
            for message in device_run.ask(device, pcie.Turn(), until=pcie.TurnDone):
                if isinstance(message, pcie.Measured):
                    _record(device_run, device, message, placed[device.uuid])
    return device_run.outcome


def _record(device_run: DeviceRun[pcie.Job], device: Device, result: pcie.Measured, placement: str) -> None:
    metric = pcie.metric_name(result.direction)
    device_run.measure(device, metric, result.windows, "GB/s", Direction.HIGHER)
    if result.bad:
        device_run.finding(
            device,
            Code.DATA_MISMATCH,
            Severity.FAIL,
            f"{result.bad} of {result.checked} checked {result.direction} copies did not match their source "
            f"({placement})",
            Remediation.INSPECT_HARDWARE,
            metric=metric,
            direction=result.direction,
            bad_copies=result.bad,
            checked=result.checked,
        )
