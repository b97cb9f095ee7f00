"""Runs the matmul burn on every device at once and turns what comes back into records.

This side never imports torch: it starts one worker per device
(`gputests.matmul:worker`), collects their results, asks for the rows it needs to
count cross-GPU differences exactly, and reports measurements and findings. A
worker that hangs, crashes or raises becomes a finding; the others' figures stay.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from gputests import crosscheck
from gputests.faults import Fault
from harness.devices import Device
from harness.profiles import Profile
from harness.records import Code, Direction, Finding, Measurement, Remediation, Severity
from harness.workers import WorkerEnd, WorkerGroup

ORDER = ("bf16", "fp16", "fp8", "tf32", "fp32")
"""Burn order: the hottest first, while every GPU is known to be cool."""


@dataclasses.dataclass(kw_only=True)
class Outcome:
    measurements: list[Measurement] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)


def dtypes_for(device: Device) -> list[str]:
    """What the device can multiply in. The CPU self-test skips tf32, a tensor-core mode."""
    if device.kind == "cpu":
        return ["bf16", "fp16", "fp8", "fp32"]
    major, minor = (int(part) for part in device.compute_capability.split("."))
    wanted = {"fp16", "fp32"}
    if major >= 8:
        wanted |= {"bf16", "tf32"}
    if (major, minor) >= (8, 9):
        wanted.add("fp8")
    return [dtype for dtype in ORDER if dtype in wanted]


def run(devices: Sequence[Device], profile: Profile, *, test: str, faults: Mapping[int, Fault]) -> Outcome:
    jobs = [_job(device, profile, len(devices), faults.get(device.index)) for device in devices]
    phases = max(len(job["dtypes"]) for job in jobs)
    busy = phases * (profile.warmup_s + profile.duration_s / phases)
    limit = profile.startup_timeout_s + 2.0 * busy + 2.0 * profile.hang_timeout_s
    results: dict[int, dict[str, dict[str, Any]]] = {i: {} for i in range(len(devices))}
    outcome = Outcome()
    with WorkerGroup(
        "gputests.matmul:worker",
        jobs,
        startup_s=profile.startup_timeout_s,
        stall_s=profile.hang_timeout_s,
        limit_s=limit,
    ) as group:
        for i, message in group.messages(until="burned"):
            if message["type"] == "result":
                results[i][message["dtype"]] = message
            elif message["type"] == "unsupported":
                outcome.findings.append(_unsupported(devices[i], message, test))
            elif message["type"] == "failed":
                outcome.findings.append(_dtype_failed(devices[i], message, test))
        found = crosscheck.disagreements(devices, results)
        asked = crosscheck.requests(found)
        for i in range(len(group)):
            group.send(i, {"rows": asked.get(i, {})})
        replies = {i: message["rows"] for i, message in group.messages(until="rows")}
        group.join()
        ends = [group.end(i) for i in range(len(group))]

    for i, device in enumerate(devices):
        for result in results[i].values():
            outcome.measurements.append(_measurement(device, result, test))
            outcome.findings.extend(_self_check(device, result, test))
        outcome.findings.extend(_worker_end(device, ends[i], test))
    for d in found:
        outcome.findings.extend(_cross_check(devices, d, crosscheck.bad_elements(d, asked, replies), test))
    return outcome


def _job(device: Device, profile: Profile, workers: int, fault: Fault | None) -> dict[str, Any]:
    dtypes = dtypes_for(device)
    threads = None
    if device.kind == "cpu":
        threads = max(1, device.sm_count // workers)
    return {
        "device": device.to_dict(),
        "dtypes": dtypes,
        "size": profile.matmul_size,
        "ring": profile.matmul_ring,
        "duration_s": profile.duration_s / len(dtypes),
        "warmup_s": profile.warmup_s,
        "threads": threads,
        "fault": fault.kind if fault else "",
    }


def _measurement(device: Device, result: Mapping[str, Any], test: str) -> Measurement:
    windows = result["windows"]
    return Measurement(
        metric=f"matmul.{result['dtype']}.tflops",
        gpu=device.uuid,
        value=statistics.median(windows),
        unit="TFLOP/s",
        direction=Direction.HIGHER,
        test=test,
        samples=len(windows),
        low=min(windows),
        high=max(windows),
    )


def _self_check(device: Device, result: Mapping[str, Any], test: str) -> list[Finding]:
    dtype = result["dtype"]
    problems = []
    if result["bad_elements"]:
        problems.append(
            f"{result['bad_results']} of {result['results_checked']} {dtype} products differed from its first product, "
            f"{result['bad_elements']} elements in all"
        )
    if result["ref_nonfinite"]:
        problems.append(
            f"its first {dtype} product holds {result['ref_nonfinite']} NaN or Inf elements from finite inputs"
        )
    if not problems:
        return []
    return [
        Finding(
            code=Code.DATA_MISMATCH,
            severity=Severity.FAIL,
            gpu=device.uuid,
            message=f"{device.label} ({device.uuid}): " + "; ".join(problems),
            remediation=Remediation.REPLACE_GPU,
            test=test,
            metric=f"matmul.{dtype}.tflops",
            details={key: result[key] for key in ("bad_results", "results_checked", "bad_elements", "ref_nonfinite")},
        )
    ]


def _cross_check(devices: Sequence[Device], d: crosscheck.Disagreement, bad: int | None, test: str) -> list[Finding]:
    suspect, reference = devices[d.suspect], devices[d.reference]
    count = f"{bad} elements" if bad is not None else "an uncounted number of elements"
    where = f"in {count} across {len(d.rows)} rows"
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
    return [
        Finding(
            code=Code.DATA_MISMATCH,
            severity=Severity.FAIL,
            gpu=device.uuid,
            message=f"{device.label} ({device.uuid}): {text}",
            remediation=Remediation.REPLACE_GPU,
            test=test,
            metric=f"matmul.{d.dtype}.tflops",
            details=details,
        )
        for device, text in blamed
    ]


def _worker_end(device: Device, end: WorkerEnd, test: str) -> list[Finding]:
    if end.status == "done":
        return []
    if end.status == "hung":
        text = f"matmul worker {end.error}; it was killed"
        return [_blocked(device, Code.HANG, text, Remediation.RESET_GPU, test, phase=end.phase)]
    text = f"matmul worker {end.status} during {end.phase}: {end.last_line}"
    details = {"phase": end.phase, "exitcode": end.exitcode, "traceback": end.error}
    return [_blocked(device, Code.TEST_ERROR, text, Remediation.RERUN, test, **details)]


def _dtype_failed(device: Device, message: Mapping[str, Any], test: str) -> Finding:
    text = f"matmul {message['dtype']} raised: {message['error']}"
    details = {"dtype": message["dtype"], "traceback": message["traceback"]}
    return _blocked(device, Code.TEST_ERROR, text, Remediation.RERUN, test, **details)


def _blocked(device: Device, code: Code, text: str, remediation: Remediation, test: str, **details: Any) -> Finding:
    """A finding that stops a decision about this device (incomplete), never a verdict on it."""
    return Finding(
        code=code,
        severity=Severity.INCOMPLETE,
        gpu=device.uuid,
        message=f"{device.label} ({device.uuid}): {text}",
        remediation=remediation,
        test=test,
        metric=f"matmul.{details['dtype']}.tflops" if "dtype" in details else "",
        details=details,
    )


def _unsupported(device: Device, message: Mapping[str, Any], test: str) -> Finding:
    return Finding(
        code=Code.TEST_SKIPPED,
        severity=Severity.INFO,
        gpu=device.uuid,
        message=f"{device.label}: {message['dtype']} not measured: {message['reason']}",
        test=test,
        metric=f"matmul.{message['dtype']}.tflops",
    )
