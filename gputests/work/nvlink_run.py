"""The GPU-to-GPU test, parent side: the N x N matrix, one pair at a time, one way and both ways.

Every GPU's worker sees the whole node (gputests/work/nvlink.py is the worker side) and
says which peers it reaches directly. Then, one pair at a time so that a figure is
the pair's own link, the source's worker copies to its peer (`nvlink.p2p.gbps`,
per ordered pair), and each unordered pair copies both ways at once
(`nvlink.p2p.bidir.gbps`, recorded for both GPUs). Measurements carry the peer; the
comparison judges each pair against the baseline's floor and against the node's
median pair. A pair that cannot reach each other directly is `NO_PEER_ACCESS`: a
failure where the model's baseline requires the NVLink figures (boards built with
NVLink), a warning elsewhere. Link states and error counters are the health rules'
(NVLINK_DOWN, NVLINK_ERRORS), judged around this test as around every stress test.

A node with one GPU has no pair: the test says so and measures nothing, which is
incomplete only where the baseline requires these metrics.
"""

from __future__ import annotations

from gputests.work import nvlink
from harness.devices import Device
from harness.groups import NvlinkSection
from harness.records import Code, Direction, Finding, Remediation, Severity
from harness.workers import WorkerStatus
from harness.workers.devicetest import DeviceRun, Outcome, Scope, nothing_to_test

METRICS = (nvlink.ONE_WAY, nvlink.BOTH_WAYS)
ALLOWANCE_S = 5.0
"""Per pair and mode, for what is not timed: allocating and filling the buffers, the warm-up and
calibration copies, freeing (an estimate: up to 5.5 GiB of buffers per pair both ways, 11 of 256 MiB
each way; a few tens of ms of copies)."""


def pairs(devices: tuple[Device, ...]) -> list[tuple[Device, Device, bool]]:
    """Every ordered pair one way, then every unordered pair both ways, in device order."""
    one_way = [(a, b, False) for a in devices for b in devices if a != b]
    both_ways = [(a, b, True) for i, a in enumerate(devices) for b in devices[i + 1 :]]
    return one_way + both_ways


def run(scope: Scope) -> Outcome:
    devices = scope.devices
    if len(devices) < 2:
        return nothing_to_test(scope, "the only GPU of this node: no pair to copy between", METRICS)
    profile = scope.profile
    schedule = pairs(devices)
    job = nvlink.Job(
        nbytes=profile.section(NvlinkSection).mib << 20,
        seconds=profile.duration_s / len(schedule),
        warmup_s=min(profile.warmup_s, 0.2),
    )
    busy = profile.duration_s + len(schedule) * (ALLOWANCE_S + job.warmup_s)
    ready: dict[str, nvlink.Ready] = {}
    with DeviceRun(scope, nvlink.worker, [job] * len(devices), busy_s=busy, sees="node") as device_run:
        for device, message in device_run.messages(until=nvlink.Ready):
            if isinstance(message, nvlink.Ready):
                ready[device.uuid] = message
        for device in devices:
            if device.uuid in ready:
                device_run.outcome.findings += access_findings(scope, device, ready[device.uuid])
        for source, peer, both_ways in schedule:
            mine = ready.get(source.uuid)
            if mine is None or peer.uuid not in mine.reachable:
                continue
            if device_run.end(source).status is not WorkerStatus.RUNNING:
                continue  # it hung or died on an earlier pair: that is its finding
            for message in device_run.ask(source, nvlink.Copy(peer=peer.uuid, both_ways=both_ways), nvlink.PairDone):
                if isinstance(message, nvlink.Copied):
                    _record(device_run, source, peer, message)
        for device in devices:
            device_run.send(device, nvlink.Stop())
    return device_run.outcome


def access_findings(scope: Scope, device: Device, ready: nvlink.Ready) -> list[Finding]:
    """`NO_PEER_ACCESS` for each peer the device cannot reach directly: a failure where its baseline
    requires the NVLink figures (a board built with NVLink), a warning elsewhere."""
    by_uuid = {d.uuid: d for d in scope.devices}
    required = scope.requires(device, nvlink.ONE_WAY)
    found = []
    for uuid in ready.unreachable:
        peer = by_uuid[uuid]
        text = f"cannot reach {peer.label} ({peer.uuid}) directly (CUDA peer access)"
        if required:
            text += "; this model's GPUs are built to reach each other over NVLink"
        found.append(
            device.finding(
                Code.NO_PEER_ACCESS,
                Severity.FAIL if required else Severity.WARNING,
                text,
                Remediation.INSPECT_HARDWARE if required else Remediation.NONE,
                test=scope.test,
                metric=nvlink.ONE_WAY,
                peer=uuid,
            )
        )
    return found


def _record(device_run: DeviceRun[nvlink.Job], source: Device, peer: Device, copied: nvlink.Copied) -> None:
    metric = nvlink.BOTH_WAYS if copied.both_ways else nvlink.ONE_WAY
    device_run.measure(source, metric, copied.windows, "GB/s", Direction.HIGHER, peer=peer)
    if copied.both_ways:  # a figure of the pair: each GPU's row of the matrix shows it
        device_run.measure(peer, metric, copied.windows, "GB/s", Direction.HIGHER, peer=source)
    if copied.bad:
        way = "between it and" if copied.both_ways else "from it to"
        device_run.finding(
            source,
            Code.DATA_MISMATCH,
            Severity.FAIL,
            f"{copied.bad} of {copied.checked} checked copies {way} {peer.label} did not match their source",
            Remediation.INSPECT_HARDWARE,
            metric=metric,
            peer=peer.uuid,
            bad_copies=copied.bad,
            checked=copied.checked,
        )
