"""The training test, parent side: what it asks each device and what it makes of the answers.

Every device trains the same model from the same start (gputests/work/train.py is the
worker side) and sends its fingerprints a window at a time. When all have finished,
the vote (gputests/work/train_vote.py) compares them step by step across the devices
of each model: a device against the majority is DATA_MISMATCH, named with the step
and the first tensor group that differs; two that disagree with no majority are both
INCONCLUSIVE. A device with no peer of its model ran every step twice and compared
the runs itself (weaker: it catches intermittent faults only, and its finding says
so). A device whose loss is not finite, or does not fall, is TRAIN_DIVERGED.
Throughput (tokens/s, model FLOP utilisation) is judged against the baseline by
the plugin, like the matmul test's.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

from gputests.work import train_vote
from gputests.work.train import METRIC, Job, Replay, Replayed, Rerun, Started, Trained, Window, worker
from gputests.work.train_vote import Disagreement, Print
from harness.devices import Device
from harness.groups import TrainSection
from harness.records import Code, Direction, Remediation, Severity
from harness.workers.devicetest import DeviceRun, Outcome, Scope

TOKENS = METRIC
MFU = "train.mfu"
FIRST_STEPS = 16
"""Fingerprints of the first steps kept in the result file, for comparing nodes."""
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,
    "NVIDIA H200": 989.4,
    "NVIDIA A100-SXM4-80GB": 312.0,
}
"""Dense bf16 tensor-core peak by device name (NVIDIA's datasheets), the denominator of MFU.
A device not listed has no MFU figure; a baseline that requires one makes its run incomplete."""


@dataclasses.dataclass(kw_only=True)
class _Reports:
    """What one device sent."""

    started: Started | None = None
    prints: list[Print] = dataclasses.field(default_factory=list)
    windows: list[Window] = dataclasses.field(default_factory=list)
    reruns: list[Rerun] = dataclasses.field(default_factory=list)
    trained: Trained | None = None


def run(scope: Scope) -> Outcome:
    devices = scope.devices
    peers = collections.Counter(d.model_key for d in devices)
    shape = scope.profile.section(TrainSection)  # the CPU self-test's profile holds the tiny model
    jobs = [
        Job(
            shape=shape,
            duration_s=scope.profile.duration_s,
            warmup_s=scope.profile.warmup_s,
            rerun=peers[device.model_key] == 1,
        )
        for device in devices
    ]
    busy = scope.profile.warmup_s + scope.profile.duration_s
    with DeviceRun(scope, worker, jobs, busy_s=busy) as device_run:
        reports = _collect(device_run)
        names = next((r.started.groups for r in reports.values() if r.started is not None), ())
        prints = {i: r.prints for i, r in reports.items()}
        tally = train_vote.vote({i: d.model_key for i, d in enumerate(devices)}, prints, names)
        ties = [d for d in tally.disagreements if not d.majority]
        replays = _replays(device_run, ties)
    for d in tally.disagreements:
        if d.majority:
            _disagreement(device_run, d)
    for (_, step), tied in _ties(devices, ties).items():
        judged = train_vote.break_tie(tied, step, prints, replays)
        for d in ties:
            if d.suspect in tied:
                _tie(device_run, d, judged[d.suspect], replays.get(d.suspect), prints, names)
    for i, device in enumerate(devices):
        got = reports[i]
        for rerun in got.reruns[:1]:  # the first: after it, the run goes on from the first run's state
            _rerun_mismatch(device_run, device, rerun, names, len(got.reruns))
        if got.trained is None:
            continue
        if got.trained.complete:  # a run an error cut short has its TEST_ERROR; its loss is not judged
            _progress(device_run, device, got, agreed=peers[device.model_key] > 1 and not tally.disagreements)
        _unchecked(device_run, device, got, tally.compared.get(i, 0), lone=jobs[i].rerun)
        if got.prints:
            _fingerprints(device_run, device, got, jobs[i].rerun)
    return device_run.outcome


def _collect(device_run: DeviceRun[Job]) -> dict[int, _Reports]:
    """Every device's messages until it has trained; its figures are recorded as it finishes,
    so an interrupted run keeps them."""
    devices = device_run.scope.devices
    reports = {i: _Reports() for i in range(len(devices))}
    for device, message in device_run.messages(until=Trained):
        got = reports[devices.index(device)]
        if isinstance(message, Started):
            got.started = message
        elif isinstance(message, Window):
            got.windows.append(message)
            got.prints.extend(message.prints)
        elif isinstance(message, Rerun):
            got.reruns.append(message)
        elif isinstance(message, Trained):
            got.trained = message
            _measure(device_run, device, got)
    return reports


def _replays(device_run: DeviceRun[Job], ties: Sequence[Disagreement]) -> dict[int, Print | None]:
    """Ask each tied device to replay its training to the step of the tie, every other to finish."""
    devices = device_run.scope.devices
    asked = {d.suspect: d.step for d in ties}
    for i, device in enumerate(devices):
        device_run.send(device, Replay(step=asked.get(i, 0)))
    return {
        devices.index(device): message.print
        for device, message in device_run.messages(until=Replayed)
        if isinstance(message, Replayed)
    }


def _ties(devices: Sequence[Device], ties: Sequence[Disagreement]) -> dict[tuple[tuple[object, ...], int], list[int]]:
    """The devices of each tie, by model and the step where they parted (one tie per model at most)."""
    found: dict[tuple[tuple[object, ...], int], list[int]] = collections.defaultdict(list)
    for d in ties:
        found[(devices[d.suspect].model_key, d.step)].append(d.suspect)
    return found


def _measure(device_run: DeviceRun[Job], device: Device, got: _Reports) -> None:
    timed = [w.tokens_per_s for w in got.windows if w.timed]
    if not timed or got.started is None:
        return
    device_run.measure(device, TOKENS, timed, "tokens/s", Direction.HIGHER)
    peak = PEAK_TFLOPS.get(device.name)
    if peak is not None:
        mfu = [t * got.started.flops_per_token / (peak * 1e12) for t in timed]
        device_run.measure(device, MFU, mfu, "fraction", Direction.HIGHER)


def _disagreement(device_run: DeviceRun[Job], d: Disagreement) -> None:
    """A device against the majority of its model."""
    devices = device_run.scope.devices
    suspect, reference = devices[d.suspect], devices[d.reference]
    text = (
        f"at step {d.step} its training step differs bitwise from the one a majority of the {d.voters} devices of "
        f"its model agree on (compared with {reference.label}); differing: {_what(d.parts, d.group)}"
    )
    details: dict[str, Any] = {"step": d.step, "group": d.group, "parts": list(d.parts), "reference": reference.uuid}
    details |= {"majority": True, "voters": d.voters}
    device_run.finding(suspect, Code.DATA_MISMATCH, Severity.FAIL, text, Remediation.REPLACE_GPU, **details)


def _tie(
    device_run: DeviceRun[Job],
    d: Disagreement,
    judged: str,
    replay: Print | None,
    prints: dict[int, list[Print]],
    names: Sequence[str],
) -> None:
    """A device that disagreed with no majority, after the replays broke the tie or did not."""
    devices = device_run.scope.devices
    suspect, reference = devices[d.suspect], devices[d.reference]
    details: dict[str, Any] = {"step": d.step, "group": d.group, "parts": list(d.parts), "reference": reference.uuid}
    details |= {"majority": False, "voters": d.voters, "tie": judged}
    if judged == train_vote.CLEARED:
        return
    if judged == train_vote.FLAKY and replay is not None:
        parts, group = replay.differs_from(prints[d.suspect][d.step - 1], names)
        text = (
            f"at step {d.step} its training step differs bitwise from {reference.label}'s, and a replay of its "
            f"training from the start to that step gave another result (differing: {_what(parts, group)}): "
            "an intermittent fault"
        )
        details |= {"group": group, "parts": parts, "check": "replay"}
        device_run.finding(suspect, Code.DATA_MISMATCH, Severity.FAIL, text, Remediation.REPLACE_GPU, **details)
        return
    text = (
        f"at step {d.step} its training step differs bitwise from {reference.label}'s (differing: "
        f"{_what(d.parts, d.group)}); no majority of the {d.voters} devices of its model tells which is right, "
        "and replaying the training to that step did not either: rerun with more GPUs of the model"
    )
    device_run.finding(suspect, Code.INCONCLUSIVE, Severity.INCOMPLETE, text, Remediation.RERUN, **details)


def _rerun_mismatch(device_run: DeviceRun[Job], device: Device, rerun: Rerun, names: Sequence[str], count: int) -> None:
    parts, group = rerun.second.differs_from(rerun.first, names)
    text = (
        f"at step {rerun.step} a second run of the training step from the same state gave another result "
        f"(differing: {_what(parts, group)}); {count} of its steps differed from their second run"
    )
    device_run.finding(
        device,
        Code.DATA_MISMATCH,
        Severity.FAIL,
        text,
        Remediation.REPLACE_GPU,
        step=rerun.step,
        group=group,
        parts=parts,
        check="rerun",
        steps_differing=count,
    )


def _progress(device_run: DeviceRun[Job], device: Device, got: _Reports, *, agreed: bool) -> None:
    ok, why = train_vote.progressed(got.prints)
    if ok:
        return
    # Devices of one model that agree bitwise and all diverge point at the recipe or the software.
    remediation = Remediation.CHECK_CONFIG if agreed else Remediation.RESET_GPU
    device_run.finding(
        device,
        Code.TRAIN_DIVERGED,
        Severity.FAIL,
        f"training did not progress: {why}",
        remediation,
        steps=len(got.prints),
    )


def _unchecked(device_run: DeviceRun[Job], device: Device, got: _Reports, compared: int, *, lone: bool) -> None:
    """A device whose steps nothing checked: its peers reported none, and it did not rerun its own."""
    if lone or compared or not got.prints:
        return
    text = (
        f"none of its {len(got.prints)} training steps could be compared: the other devices of its model "
        "reported none (see their findings)"
    )
    device_run.finding(device, Code.INCONCLUSIVE, Severity.INCOMPLETE, text, Remediation.RERUN, steps=len(got.prints))


def _fingerprints(device_run: DeviceRun[Job], device: Device, got: _Reports, lone: bool) -> None:
    """The first steps' fingerprints, in the result file, and how the steps were checked."""
    first = got.prints[:FIRST_STEPS]
    if lone:
        how = (
            "alone of its model in this node: each step was compared with a second run of itself, which catches "
            "intermittent faults only, not a device that is consistently wrong"
        )
    else:
        how = "each step compared bitwise with the other devices of its model"
    losses = f"loss {got.prints[0].loss:.4g} to {got.prints[-1].loss:.4g}"
    device_run.finding(
        device,
        Code.TRAIN_FINGERPRINTS,
        Severity.INFO,
        f"{len(got.prints)} steps, {losses}; {how}; first {len(first)} steps' digest {train_vote.digest(first)}",
        check="rerun" if lone else "vote",
        steps=len(got.prints),
        digest=train_vote.digest(first),
        fingerprints=[p.hex() for p in first],
        groups=list(got.started.groups) if got.started else [],
    )


def _what(parts: Sequence[str], group: str) -> str:
    """What differs, in words: "loss, gradient norm, parameters (first in layers.1)"."""
    return ", ".join(f"parameters (first in {group})" if part == "parameters" else part for part in parts)
