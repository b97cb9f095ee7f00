"""The matmul test, parent side: what it asks each device and what it makes of the answers.

Every device burns at once (gputests/work/matmul.py is the worker side). Each product
is checked against the device's first product; first products are compared across
devices of one model, and where they disagree the differing rows are fetched and
counted exactly. A device that hangs, crashes or raises becomes a finding through
the scaffolding (harness/workers/devicetest.py); the others' figures stay.
"""

from __future__ import annotations

from gputests.work import crosscheck
from gputests.work.matmul import Burned, BurnResult, Job, Rows, RowsRequest, metric_name, worker
from harness.devices import Device
from harness.groups import MatmulSection
from harness.profiles import Profile
from harness.records import Code, Direction, Remediation, Severity
from harness.workers.devicetest import DeviceRun, Outcome, Scope

ORDER = ("bf16", "fp16", "fp8", "tf32", "fp32")
"""Burn order: the hottest first, while every GPU is known to be cool."""


def dtypes_for(device: Device) -> tuple[str, ...]:
    """What the device can multiply in. The CPU self-test skips tf32, a tensor-core mode."""
    if device.kind == "cpu":
        return ("bf16", "fp16", "fp8", "fp32")
    major, minor = (int(part) for part in device.compute_capability.split("."))
    wanted = {"fp16", "fp32"}
    if major >= 8:
        wanted |= {"bf16", "tf32"}
    if (major, minor) >= (8, 9):
        wanted.add("fp8")
    return tuple(dtype for dtype in ORDER if dtype in wanted)


def run(scope: Scope) -> Outcome:
    devices = scope.devices
    jobs = [_job(device, scope.profile) for device in devices]
    phases = max(len(job.dtypes) for job in jobs)
    busy = phases * (scope.profile.warmup_s + scope.profile.duration_s / phases)
    results: dict[int, dict[str, BurnResult]] = {i: {} for i in range(len(devices))}
    with DeviceRun(scope, worker, jobs, busy_s=busy) as device_run:
        for device, message in device_run.messages(until=Burned):
            if isinstance(message, BurnResult):  # measured as it arrives: an interrupted run keeps it
                results[devices.index(device)][message.dtype] = message
                device_run.measure(device, metric_name(message.dtype), message.windows, "TFLOP/s", Direction.HIGHER)
                _self_check(device_run, device, message)
        found = crosscheck.disagreements(devices, results)
        asked = crosscheck.requests(found)
        for i, device in enumerate(devices):
            device_run.send(device, RowsRequest(rows=asked.get(i, {})))
        replies = {
            devices.index(device): message.rows
            for device, message in device_run.messages(until=Rows)
            if isinstance(message, Rows)
        }

    for d in found:
        _cross_check(device_run, d, crosscheck.bad_elements(d, asked, replies))
    return device_run.outcome


def _job(device: Device, profile: Profile) -> Job:
    dtypes = dtypes_for(device)
    return Job(
        dtypes=dtypes,
        size=profile.section(MatmulSection).size,
        ring=profile.section(MatmulSection).ring,
        duration_s=profile.duration_s / len(dtypes),
        warmup_s=profile.warmup_s,
    )


def _self_check(device_run: DeviceRun[Job], device: Device, result: BurnResult) -> None:
    problems = []
    if result.bad_elements:
        problems.append(
            f"{result.bad_results} of {result.results_checked} {result.dtype} products differed from its first "
            f"product, {result.bad_elements} elements in all"
        )
    if result.ref_nonfinite:
        problems.append(
            f"its first {result.dtype} product holds {result.ref_nonfinite} NaN or Inf elements from finite inputs"
        )
    if problems:
        device_run.finding(
            device,
            Code.DATA_MISMATCH,
            Severity.FAIL,
            "; ".join(problems),
            Remediation.REPLACE_GPU,
            metric=metric_name(result.dtype),
            bad_results=result.bad_results,
            results_checked=result.results_checked,
            bad_elements=result.bad_elements,
            ref_nonfinite=result.ref_nonfinite,
        )


def _cross_check(device_run: DeviceRun[Job], d: crosscheck.Disagreement, bad: int | None) -> None:
    devices = device_run.scope.devices
    suspect, reference = devices[d.suspect], devices[d.reference]
    count = f"{bad} elements" if bad is not None else "an uncounted number of elements"
    where = f"in {count} across {len(d.rows)} rows"
    if len(d.counted_rows) < len(d.rows):
        where = f"in {len(d.rows)} rows ({count} in the first {len(d.counted_rows)} of them, counted)"
    details = {"dtype": d.dtype, "bad_elements": bad, "rows": len(d.rows), "majority": d.majority, "peers": d.peers}
    if d.majority:
        blamed = [
            (
                suspect,
                f"its {d.dtype} product differs from the one {d.peers - 1} other devices of its model agree on "
                f"(compared with {reference.label}) {where}",
            )
        ]
    else:
        note = (
            f"{suspect.label} and {reference.label} compute different {d.dtype} products {where}; "
            f"no majority of the {d.peers} devices of this model tells which is right"
        )
        blamed = [(suspect, note), (reference, note)]
    for device, text in blamed:
        device_run.finding(
            device,
            Code.DATA_MISMATCH,
            Severity.FAIL,
            text,
            Remediation.REPLACE_GPU,
            metric=metric_name(d.dtype),
            **details,
        )
